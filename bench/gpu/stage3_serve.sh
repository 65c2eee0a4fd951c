#!/usr/bin/env bash
# Stage 3: the service on ONNX Runtime's CUDA provider, on a machine without network.
#   The serving wheels are in $STAGE/wheels (bench/offline_wheels.py: download and split where there is network,
#   copy the folder over, join here); they install into a venv that sees the machine's torch
#   (--system-site-packages); the project itself is imported from this checkout. The CUDA libraries that torch's
#   wheels bring (site-packages/nvidia/*/lib) go on the loader path, for the torch-free service's ORT.
#   Then, in one run: raw ORT CUDA images/s for ResNet-50 at batch 1, 8, 32, 64; /classify on the CUDA provider at
#   concurrency 1, 32, 128 with the batch sizes ORT saw; /detect at concurrency 1. The raw sessions and /info must
#   list PROVIDER first: a silent CPU fallback fails the stage. Results: $OUT/*.json (docs/bench format) and
#   stage3_serve.log. BATCHES, CONCURRENCY, REQUESTS, SECONDS_PER_BATCH (raw ORT) and DETECT_IMAGES size it.
#
#   STAGE=.gpu bash bench/gpu/stage3_serve.sh
#   VENV=$PWD/.venv PROVIDER=CPUExecutionProvider BATCHES="1 8" CONCURRENCY="1 8" REQUESTS=16 SECONDS_PER_BATCH=1 \
#     DETECT_IMAGES=1 PYTHON=.venv/bin/python STAGE=../shared bash bench/gpu/stage3_serve.sh   # a dry run on a CPU
source "$(dirname "$0")/common.sh"
PROVIDER=${PROVIDER:-CUDAExecutionProvider}
BATCHES=${BATCHES:-"1 8 32 64"}
CONCURRENCY=${CONCURRENCY:-"1 32 128"}
REQUESTS=${REQUESTS:-256}
SECONDS_PER_BATCH=${SECONDS_PER_BATCH:-5}
DETECT_IMAGES=${DETECT_IMAGES:-8}
machine
VENV=${VENV:-$WORK/venv}  # a dry run may point it at an existing environment with bentoml and onnxruntime-gpu
ready="import bentoml, onnxruntime, importlib.metadata as m; m.version('onnxruntime-gpu')"
if ! "$VENV/bin/python" -c "$ready" 2>/dev/null; then
  if [ ! -f "$STAGE/wheels/pieces.json" ] && ! ls "$STAGE"/wheels/*.whl >/dev/null 2>&1; then
    echo "no wheels in $STAGE/wheels and no environment with bentoml and onnxruntime-gpu at $VENV: run" \
      "bench/offline_wheels.py download and split where there is network and copy the folder to $STAGE/wheels," \
      "or set VENV to such an environment"
    exit 2
  fi
  $PY -m bench.offline_wheels join "$STAGE/wheels" || exit 1
  [ -x "$VENV/bin/python" ] || $PY -m venv --without-pip --system-site-packages "$VENV" || exit 1
  # pip: the machine's own, seen from the venv (--system-site-packages), installing into the venv
  "$VENV/bin/python" -m pip install -q --no-index --find-links "$STAGE/wheels" onnxruntime-gpu bentoml httptools \
    uvloop aiohttp psutil || exit 1
fi
nvidia_libs=$("$VENV/bin/python" -c "import glob, importlib.util
spec = importlib.util.find_spec('nvidia')
print(':'.join(sorted(d for p in (spec.submodule_search_locations if spec else []) for d in glob.glob(p + '/*/lib'))))")
if [ -n "$nvidia_libs" ]; then export LD_LIBRARY_PATH=$nvidia_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}; fi
providers=$PROVIDER
if [ "$PROVIDER" != CPUExecutionProvider ]; then providers=$PROVIDER,CPUExecutionProvider; fi
"$VENV/bin/python" -c "import bentoml, onnxruntime as ort; print('bentoml', bentoml.__version__, 'onnxruntime',
ort.__version__, ort.get_device(), 'available:', ort.get_available_providers())"
echo "== serving benchmarks, RESNET_LAB_PROVIDERS=$providers ($SECONDS s)"
read -r -a batches <<<"$BATCHES"
read -r -a concurrency <<<"$CONCURRENCY"
RESNET_LAB_PROVIDERS=$providers "$VENV/bin/python" -m bench.serve_gpu --output-dir "$OUT" --batches "${batches[@]}" \
  --concurrency "${concurrency[@]}" --requests "$REQUESTS" --seconds "$SECONDS_PER_BATCH" \
  --detect-images "$DETECT_IMAGES"
status=$?
echo "serve_gpu.py: exit $status at $SECONDS s"
ls -la "$OUT"
exit $status
