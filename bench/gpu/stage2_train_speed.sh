#!/usr/bin/env bash
# Stage 2: training speed on one GPU.
#   1. CIFAR ResNet-20 epoch time alone on the GPU: EPOCH_CHECK epochs eager, then as many with --cuda-graph
#      (metrics.jsonl's epoch_time; the first epoch includes cuDNN autotuning and the captures);
#   2. tests/test_gpu.py: graphed and eager steps give the same weights, across an lr change (pytest from $PYTHON,
#      else from the wheels in $STAGE/wheels; the tests' conftest is not loaded: it needs the serving stack);
#   3. bench/train_throughput.py: ResNet-50 images/s, bf16 + channels_last at batch 256, beside the plain loop,
#      with all cores but two decoding, our step alone and our data path alone (which side binds):
#      $OUT/train_throughput_<device>.json. BENCH_OPTS replaces its size options, BENCH=0 skips it.
#
#   STAGE=.gpu bash bench/gpu/stage2_train_speed.sh
#   PYTHON=.venv/bin/python DEVICE=cpu EPOCH_CHECK=1 EXTRA="--max-train-samples 512 --max-eval-samples 200" \
#     BENCH_OPTS="--imagenet-batch 8 --steps 4 --rounds 1" STAGE=../shared bash bench/gpu/stage2_train_speed.sh
#                                                                                       # a dry run on a CPU
source "$(dirname "$0")/common.sh"
EPOCH_CHECK=${EPOCH_CHECK:-3}
EXTRA=${EXTRA:-}
BENCH=${BENCH:-1}
BENCH_OPTS=${BENCH_OPTS:-"--imagenet-batch 256 --steps 40"}
machine
cifar_data
read -r -a extra <<<"$EXTRA"
read -r -a bench_opts <<<"$BENCH_OPTS"
graph=()
if [[ $DEVICE == cuda* ]]; then graph=(--cuda-graph); fi
echo "== 1. CIFAR ResNet-20 epoch time ($SECONDS s)"
rm -rf "$WORK/runs/epochs_eager" "$WORK/runs/epochs_graph"
train epochs_eager 100000 --recipe cifar10_resnet20 --stop-after-epochs "$EPOCH_CHECK" "${extra[@]}"
train epochs_graph 100000 --recipe cifar10_resnet20 --stop-after-epochs "$EPOCH_CHECK" "${extra[@]}" "${graph[@]}"
for run in epochs_eager epochs_graph; do
  $PY -c "import json, sys; rows = [json.loads(l) for l in open(sys.argv[1])];
print(sys.argv[2], ', '.join(f\"{r['epoch']}: {r['epoch_time']:.2f} s\" for r in rows))" \
    "$WORK/runs/$run/metrics.jsonl" "$run" | tee -a "$OUT/epoch_times.txt"
  cp "$WORK/runs/$run/metrics.jsonl" "$OUT/$run.metrics.jsonl"
done
echo "== 2. GPU tests ($SECONDS s)"
if ! $PY -c "import pytest" 2>/dev/null && [ -d "$STAGE/wheels" ]; then
  $PY -m pip install -q --no-index --find-links "$STAGE/wheels" --target "$WORK/pytest" pytest \
    && export PYTHONPATH=$PYTHONPATH:$WORK/pytest
fi
if $PY -c "import pytest" 2>/dev/null; then
  $PY -m pytest -q -p no:cacheprovider --noconftest -o addopts="" tests/test_gpu.py 2>&1 | tail -n 5 \
    | tee "$OUT/test_gpu.txt"
else
  echo "tests/test_gpu.py not run: no pytest for $PY and none in $STAGE/wheels (bench/offline_wheels.py)" \
    | tee "$OUT/test_gpu.txt"
fi
if [ "$BENCH" = 1 ]; then
  echo "== 3. training throughput ($SECONDS s)"
  timeout 240 $PY -m bench.train_throughput --device "$DEVICE" --models resnet50 "${bench_opts[@]}" \
    --workers $(($(nproc) > 4 ? $(nproc) - 2 : 2)) --output-dir "$OUT"
  results="$OUT/train_throughput_${DEVICE%%:*}.json"
  [ -f "$results" ] && $PY -c "import json, sys
for row in json.load(open(sys.argv[1]))['rows']:
    print(f\"{row['model']}: ours {row['ours']:.0f} img/s, step alone {row['step_only']:.0f}, data path alone \"
          f\"{row['loader_only']:.0f}: bound by the {row['bound']}\")" "$results"
fi
ls -la "$OUT"
