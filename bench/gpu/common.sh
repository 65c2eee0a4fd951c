# Shared by the GPU stage scripts: where things are, the CIFAR-10 data, a deadline-aware runner.
# Each stage writes everything it measures under $OUT (the device tool brings that folder back).
set -uo pipefail
PY=${PYTHON:-python3}
STAGE=${STAGE:-.gpu}  # carried in: tools/make_cifar10.py, data/ (cifar10/, imagenet_samples/, coco/), runs/, wheels/
WORK=${WORK:-/tmp/resnet-lab-gpu}
OUT=${OUT:-$WORK/out}
DEVICE=${DEVICE:-cuda}
export PYTHONUNBUFFERED=1
if [ -d "$STAGE/data" ]; then export RESNET_LAB_DATA=${RESNET_LAB_DATA:-$PWD/$STAGE/data}; fi
mkdir -p "$OUT" "$WORK/runs"
exec > >(tee -a "$OUT/$(basename "$0" .sh).log") 2>&1
left() { local rest=$(($1 - SECONDS)); echo $((rest > 1 ? rest : 1)); }

machine() {
  echo "== machine ($(basename "$0"))"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  nproc
  $PY -c "import sys, torch; print(sys.version.split()[0], torch.__version__,
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no cuda')"
}

cifar_data() {
  [ -d "$WORK/data/cifar-10-batches-py" ] || $PY "$STAGE/tools/make_cifar10.py" "$WORK/data" || exit 1
}

train() {  # run name, deadline (seconds since start), then training options
  local name=$1 deadline=$2
  shift 2
  timeout "$(left "$deadline")" $PY -m training.train --device "$DEVICE" --data-dir "$WORK/data" \
    --output-dir "$WORK/runs/$name" "$@" >>"$WORK/runs/$name.log" 2>>"$WORK/runs/$name.stderr.log"
  echo "$name: exit $? at $SECONDS s"
}
