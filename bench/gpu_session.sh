#!/usr/bin/env bash
# The one prepared script a lent GPU machine runs for this project (issues 3, 5 and 6), within ~10 minutes:
#   1. the default model: cifar10_resnet20 with the paper's full recipe (64k iterations) on real CIFAR-10;
#   2. the degradation runs (Fig. 6 style): plain/ResNet 20 and 56 on a shortened schedule, beside it;
#   3. bench/train_throughput.py (CIFAR ResNet-20, ResNet-50 bf16 + channels_last) and bench/detect_speed.py.
# Training that is still running at TRAIN_DEADLINE seconds is stopped (checkpoints are atomic: --resume goes on).
# Everything lands in $OUT: session.log (this output) and runs.tgz (metrics, logs, the default model's checkpoint).
#
#   STAGE=.gpu bash bench/gpu_session.sh
# STAGE holds tools/make_cifar10.py, data/cifar10/cifar-10-jpeg.tar.gz and data/coco/val2017 (copied from
# ../shared, which does not travel to the GPU machine).
set -uo pipefail
PY=${PYTHON:-python3}
STAGE=${STAGE:-.gpu}
WORK=${WORK:-/tmp/resnet-lab-gpu}
OUT=${OUT:-$WORK/out}
DEVICE=${DEVICE:-cuda}
MAIN_EPOCHS=${MAIN_EPOCHS:-}       # empty: the recipe's own 64k iterations
SHORT_EPOCHS=${SHORT_EPOCHS:-20}   # degradation runs: milestones scale with it
EXTRA=${EXTRA:-}                   # extra training options (smoke tests: --max-train-samples ...)
TRAIN_DEADLINE=${TRAIN_DEADLINE:-470}
BENCH_DEADLINE=${BENCH_DEADLINE:-565}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$WORK/runs"
exec > >(tee -a "$OUT/session.log") 2>&1
left() { local rest=$(($1 - SECONDS)); echo $((rest > 1 ? rest : 1)); }

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
nproc
$PY -c "import sys, torch, torchvision; print(sys.version.split()[0], torch.__version__, torchvision.__version__,
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no cuda')"

echo "== data ($SECONDS s)"
$PY "$STAGE/tools/make_cifar10.py" "$WORK/data" || exit 1

train() {  # name, then training options
  local name=$1
  shift
  timeout "$(left "$TRAIN_DEADLINE")" $PY -m training.train --device "$DEVICE" --data-dir "$WORK/data" \
    --output-dir "$WORK/runs/$name" $EXTRA "$@" >"$WORK/runs/$name.log" 2>"$WORK/runs/$name.stderr.log"
  echo "$name: exit $? at $SECONDS s"
}

echo "== training ($SECONDS s)"
if [ -n "$MAIN_EPOCHS" ]; then main_epochs=(--epochs "$MAIN_EPOCHS"); else main_epochs=(); fi
train cifar10_resnet20 --recipe cifar10_resnet20 "${main_epochs[@]}" &
main_pid=$!
sleep 30  # the first epochs of the default model run alone: their epoch time is the uncontended figure
(train short_plain56 --recipe cifar10_plain56 --epochs "$SHORT_EPOCHS"
 train short_plain20 --recipe cifar10_plain20 --epochs "$SHORT_EPOCHS") &
chain_plain=$!
sleep 10
(train short_resnet56 --recipe cifar10_resnet56 --epochs "$SHORT_EPOCHS"
 train short_resnet20 --recipe cifar10_resnet20 --epochs "$SHORT_EPOCHS") &
chain_resnet=$!
wait $main_pid $chain_plain $chain_resnet
for log in "$WORK"/runs/*.log; do
  echo "-- $log"
  tail -c 600 "$log"
done

echo "== benchmarks ($SECONDS s)"
timeout "$(left $((BENCH_DEADLINE - 25)))" $PY bench/train_throughput.py --device "$DEVICE" \
  --models cifar_resnet20 resnet50 --imagenet-batch 128 --steps 40 --workers 12
timeout "$(left "$BENCH_DEADLINE")" $PY bench/detect_speed.py --coco-root "$STAGE/data/coco" --devices "$DEVICE" \
  --images 8

echo "== pack ($SECONDS s)"
tar czf "$OUT/runs.tgz" -C "$WORK" --exclude='short_*/checkpoints' --exclude='*/best.pt' runs
ls -la "$OUT"
echo "done at $SECONDS s"
