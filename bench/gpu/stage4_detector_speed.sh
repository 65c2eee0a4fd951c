#!/usr/bin/env bash
# Stage 4: detection speed on the same weights on one GPU (bench/torchvision_parity_speed.py). The earlier GPU
#   figure (the project's FPN detector 0.042 s/image against torchvision's 0.022 s on the same H100) compared
#   FrozenBatchNorm (a separate multiply and add per BatchNorm, 53 of them, plus the scale computed on each call)
#   with the plain BatchNorm of torchvision's builder without weights. Here, side by side on the same images and
#   one state dict: torchvision with FrozenBatchNorm (as for its COCO file) and with plain BatchNorm, the project's
#   detector as imported and with BatchNorm folded into the convolutions, and the project's ONNX files (folded and
#   unfolded) on ORT's PROVIDER. ORT must run on PROVIDER first (no silent CPU fallback). Results:
#   $OUT/torchvision_parity_speed.json (docs/bench format) and stage4_detector_speed.log. IMAGES sizes it.
#   Python: PYTHON, else stage 3's venv ($WORK/venv: onnxruntime-gpu over the machine's torch) where it exists.
#
#   STAGE=.gpu bash bench/gpu/stage4_detector_speed.sh
#   PYTHON=.venv/bin/python DEVICE=cpu PROVIDER=CPUExecutionProvider IMAGES=2 STAGE=../shared \
#     bash bench/gpu/stage4_detector_speed.sh                                                 # a dry run on a CPU
if [ -z "${PYTHON:-}" ] && [ -x "${WORK:-/tmp/resnet-lab-gpu}/venv/bin/python" ]; then
  PYTHON=${WORK:-/tmp/resnet-lab-gpu}/venv/bin/python
fi
source "$(dirname "$0")/common.sh"
PROVIDER=${PROVIDER:-CUDAExecutionProvider}
IMAGES=${IMAGES:-20}
machine
if ! $PY -c "import torch, torchvision, onnxruntime, PIL" 2>/dev/null; then
  echo "$PY lacks torch, torchvision, onnxruntime or pillow: run stage 3 first (its venv), or set PYTHON"
  exit 2
fi
nvidia_libs=$($PY -c "import glob, importlib.util
spec = importlib.util.find_spec('nvidia')
print(':'.join(sorted(d for p in (spec.submodule_search_locations if spec else []) for d in glob.glob(p + '/*/lib'))))")
if [ -n "$nvidia_libs" ]; then export LD_LIBRARY_PATH=$nvidia_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}; fi
providers=$PROVIDER
if [ "$PROVIDER" != CPUExecutionProvider ]; then providers=$PROVIDER,CPUExecutionProvider; fi
echo "== detection speed on the same weights, $IMAGES images, eager on $DEVICE, ORT $providers ($SECONDS s)"
timeout 1200 $PY -m bench.torchvision_parity_speed --device "$DEVICE" --images "$IMAGES" --providers "$providers" \
  --output-dir "$OUT"
status=$?
echo "torchvision_parity_speed.py: exit $status at $SECONDS s"
ls -la "$OUT"
exit $status
