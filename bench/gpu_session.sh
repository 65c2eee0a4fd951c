#!/usr/bin/env bash
# One unattended GPU run, sized for about nine minutes on one H100:
#   1. CIFAR ResNet-20 epoch time alone on the GPU: EPOCH_CHECK epochs eager, then as many with --cuda-graph;
#   2. bench/train_throughput.py: ResNet-50 training images/s with bf16 + channels_last beside a plain loop;
#   3. default-model candidates: the paper's full recipe on real CIFAR-10 until TRAIN_DEADLINE seconds, each entry
#      of CANDIDATES being "recipe[:extra options]", run with --cuda-graph. ResNet-56 alone by default: runs beside
#      it would share the GPU. "cifar10_resnet20:--no-amp" and "cifar10_resnet110" are opt-in.
#      Checkpoints are atomic; runs found in $STAGE/runs are continued (RESUME=0 starts afresh), so the archives of
#      an earlier run (`for f in OUT/full_*.tgz; do tar xzf "$f" -C .gpu; done`) or a CPU head start
#      (`--output-dir .gpu/runs/full_cifar10_resnet56`) pick up where they stopped.
# Everything lands in $OUT: session.log (this output), logs.tgz (every run's metrics and logs) and one
# full_<run>.tgz per candidate (its folder with last.pt, to resume from).
#
#   STAGE=.gpu bash bench/gpu_session.sh
#   DEVICE=cpu EPOCH_CHECK=1 EXTRA="--max-train-samples 512 --max-eval-samples 200" CANDIDATES=cifar10_resnet20 \
#     TRAIN_DEADLINE=200 BENCH=0 STAGE=.gpu bash bench/gpu_session.sh       # a dry run on a CPU
# STAGE holds tools/make_cifar10.py and data/cifar10/cifar-10-jpeg.tar.gz (copied from the shared data folder,
# for machines that do not have it).
set -uo pipefail
PY=${PYTHON:-python3}
STAGE=${STAGE:-.gpu}
WORK=${WORK:-/tmp/resnet-lab-gpu}
OUT=${OUT:-$WORK/out}
DEVICE=${DEVICE:-cuda}
EPOCH_CHECK=${EPOCH_CHECK:-3}
CANDIDATES=${CANDIDATES:-"cifar10_resnet56"}
EXTRA=${EXTRA:-}            # extra training options for every run (dry runs: --max-train-samples ...)
BENCH=${BENCH:-1}
RESUME=${RESUME:-1}
TRAIN_DEADLINE=${TRAIN_DEADLINE:-520}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$WORK/runs"
exec > >(tee -a "$OUT/session.log") 2>&1
left() { local rest=$(($1 - SECONDS)); echo $((rest > 1 ? rest : 1)); }
GRAPH=()
if [[ $DEVICE == cuda* ]]; then GRAPH=(--cuda-graph); fi

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
nproc
$PY -c "import sys, torch, torchvision; print(sys.version.split()[0], torch.__version__, torchvision.__version__,
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no cuda')"

echo "== data ($SECONDS s)"
$PY "$STAGE/tools/make_cifar10.py" "$WORK/data" || exit 1

train() {  # run name, then training options; stopped at TRAIN_DEADLINE
  local name=$1
  shift
  timeout "$(left "$TRAIN_DEADLINE")" $PY -m training.train --device "$DEVICE" --data-dir "$WORK/data" \
    --output-dir "$WORK/runs/$name" $EXTRA "$@" >>"$WORK/runs/$name.log" 2>>"$WORK/runs/$name.stderr.log"
  echo "$name: exit $? at $SECONDS s"
}

epoch_times() {  # run name: "epoch N: S s" per epoch from metrics.jsonl
  $PY -c "import json, sys; rows = [json.loads(l) for l in open(sys.argv[1])];
print(sys.argv[2], ', '.join(f\"{r['epoch']}: {r['epoch_time']:.2f} s\" for r in rows))" \
    "$WORK/runs/$1/metrics.jsonl" "$1"
}

echo "== 1. CIFAR ResNet-20 epoch time, alone ($SECONDS s)"
train epochs_eager --recipe cifar10_resnet20 --stop-after-epochs "$EPOCH_CHECK"
train epochs_graph --recipe cifar10_resnet20 --stop-after-epochs "$EPOCH_CHECK" "${GRAPH[@]}"
epoch_times epochs_eager
epoch_times epochs_graph

if [ "$BENCH" = 1 ]; then
  echo "== 2. training throughput ($SECONDS s)"
  # ResNet-50 only (CIFAR's GPU target is the epoch time above), at the paper's batch of 256; the "step only"
  # column is the GPU's rate, "ours" adds our JPEG loader (all cores but two decoding).
  timeout 150 $PY bench/train_throughput.py --device "$DEVICE" --models resnet50 --imagenet-batch 256 --steps 40 \
    --workers $(($(nproc) > 4 ? $(nproc) - 2 : 2))
fi

echo "== 3. default-model candidates until $TRAIN_DEADLINE s ($SECONDS s)"
if [ "$RESUME" = 1 ] && [ -n "$(ls -A "$STAGE/runs" 2>/dev/null)" ]; then cp -r "$STAGE"/runs/* "$WORK/runs/"; fi
pids=()
for entry in $CANDIDATES; do
  recipe=${entry%%:*}
  options=()
  if [[ $entry == *:* ]]; then read -r -a options <<<"${entry#*:}"; fi
  name="full_${recipe}${options[*]:+_${options[*]//[- ]/}}"
  resume=()
  if [ -f "$WORK/runs/$name/checkpoints/last.pt" ]; then resume=(--resume); fi
  train "$name" --recipe "$recipe" "${options[@]}" "${GRAPH[@]}" "${resume[@]}" &
  pids+=($!)
done
wait "${pids[@]}"
for run in "$WORK"/runs/full_*/; do
  echo "-- $(basename "$run")"
  tail -n 3 "${run%/}.log"
done

echo "== pack ($SECONDS s)"
# One archive per candidate: the device returns files of 16 MiB at most (ResNet-110's last.pt alone is ~14 MB).
tar czf "$OUT/logs.tgz" -C "$WORK" --exclude='*/checkpoints' runs
for run in "$WORK"/runs/full_*/; do
  name=$(basename "$run")
  tar czf "$OUT/$name.tgz" -C "$WORK" --exclude='*/best.pt' "runs/$name" "runs/$name.log" "runs/$name.stderr.log"
done
ls -la "$OUT"
echo "done at $SECONDS s"
