#!/usr/bin/env bash
# Stage 2: training speed on one GPU.
#   1. CIFAR ResNet-20 epoch time alone on the GPU: EPOCH_CHECK epochs eager, then as many with --cuda-graph
#      (metrics.jsonl's epoch_time; the first epoch includes cuDNN autotuning and the captures);
#   2. tests/test_gpu.py: graphed and eager steps give the same weights, across an lr change;
#   3. bench/train_throughput.py: ResNet-50 images/s, bf16 + channels_last at batch 256, beside the plain loop,
#      with all cores but two decoding (writes docs/bench/train_throughput_cuda.json, copied to $OUT).
#
#   STAGE=.gpu bash bench/gpu/stage2_train_speed.sh
#   DEVICE=cpu EPOCH_CHECK=1 EXTRA="--max-train-samples 512 --max-eval-samples 200" BENCH=0 \
#     STAGE=.gpu bash bench/gpu/stage2_train_speed.sh                               # a dry run on a CPU
source "$(dirname "$0")/common.sh"
EPOCH_CHECK=${EPOCH_CHECK:-3}
EXTRA=${EXTRA:-}
BENCH=${BENCH:-1}
machine
cifar_data
read -r -a extra <<<"$EXTRA"
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
$PY -m pytest -q -p no:cacheprovider tests/test_gpu.py -o addopts="" 2>&1 | tail -n 5 | tee "$OUT/test_gpu.txt"
if [ "$BENCH" = 1 ]; then
  echo "== 3. training throughput ($SECONDS s)"
  timeout 240 $PY bench/train_throughput.py --device "$DEVICE" --models resnet50 --imagenet-batch 256 --steps 40 \
    --workers $(($(nproc) > 4 ? $(nproc) - 2 : 2))
  cp docs/bench/train_throughput_cuda.json "$OUT/" 2>/dev/null || true
fi
ls -la "$OUT"
