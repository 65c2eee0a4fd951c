#!/usr/bin/env bash
# Stage 3: the service on ONNX Runtime's CUDA provider, on a machine without network.
#   The serving wheels come along in $STAGE/wheels (bench/offline_wheels.py: download and split here, carry the
#   pieces, join there); they install into a venv that sees the machine's torch (--system-site-packages).
#   Then, in one run: raw ORT CUDA images/s for ResNet-50 at batch 1, 8, 32, 64; /classify on the CUDA provider at
#   concurrency 1, 32, 128 (/info must list CUDAExecutionProvider first: a silent CPU fallback fails the stage);
#   /detect at concurrency 1. Results: $OUT/*.json (docs/bench format) and stage3_serve.log.
#
#   STAGE=.gpu bash bench/gpu/stage3_serve.sh
#   VENV=$PWD/.venv PROVIDER=CPUExecutionProvider REQUESTS=16 STAGE=.gpu bash bench/gpu/stage3_serve.sh  # CPU dry run
source "$(dirname "$0")/common.sh"
PROVIDER=${PROVIDER:-CUDAExecutionProvider}
REQUESTS=${REQUESTS:-256}
machine
VENV=${VENV:-$WORK/venv}          # a dry run may point it at an existing environment
if [ ! -x "$VENV/bin/python" ]; then
  $PY bench/offline_wheels.py join "$STAGE/wheels" || exit 1
  $PY -m venv --system-site-packages "$VENV"
  "$VENV/bin/pip" install -q --no-index --find-links "$STAGE/wheels" onnxruntime-gpu bentoml httptools uvloop \
    aiohttp psutil || exit 1
  "$VENV/bin/pip" install -q --no-deps --no-build-isolation -e . || exit 1
fi
echo "== serving benchmarks ($SECONDS s)"
RESNET_LAB_PROVIDERS=$PROVIDER,CPUExecutionProvider "$VENV/bin/python" bench/serve_gpu.py --requests "$REQUESTS" \
  --out "$OUT"
ls -la "$OUT"
