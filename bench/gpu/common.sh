# Shared by the GPU stage scripts: where things are, the CIFAR-10 data, a runner that stops training at a deadline.
# Each stage writes everything it measures under $OUT (default $WORK/out), its own output included (<stage>.log).
#   STAGE: a folder laid out like the shared data folder, for machines that do not have it: tools/make_cifar10.py,
#     data/ (cifar10/, imagenet_samples/, coco/), optionally runs/ (earlier runs to resume) and wheels/ (stage 3).
#     A dry run here can point it at ../shared itself.
#   PYTHON (python3), WORK (/tmp/resnet-lab-gpu: data, runs, venv), DEVICE (cuda).
# The project is imported from this checkout (PYTHONPATH), so nothing needs installing for it.
set -uo pipefail
PY=${PYTHON:-python3}
STAGE=$(cd "${STAGE:-.gpu}" 2>/dev/null && pwd || echo "${STAGE:-.gpu}")
WORK=${WORK:-/tmp/resnet-lab-gpu}
OUT=${OUT:-$WORK/out}
DEVICE=${DEVICE:-cuda}
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1  # the repository root: bench/, tests/ and the packages
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
if [ -d "$STAGE/data" ]; then export RESNET_LAB_DATA=${RESNET_LAB_DATA:-$STAGE/data}; fi
mkdir -p "$OUT" "$WORK/runs"
exec > >(tee -a "$OUT/$(basename "$0" .sh).log") 2>&1
left() { local rest=$(($1 - SECONDS)); echo $((rest > 1 ? rest : 1)); }

machine() {
  echo "== machine ($(basename "$0"), STAGE=$STAGE, WORK=$WORK, OUT=$OUT)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  nproc
  $PY -c "import sys, torch; print(sys.version.split()[0], torch.__version__,
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no cuda')"
}

cifar_data() {
  [ -d "$WORK/data/cifar-10-batches-py" ] && return
  if [ ! -f "$STAGE/tools/make_cifar10.py" ]; then
    echo "no $STAGE/tools/make_cifar10.py: set STAGE to a copy of the shared folder (tools/, data/cifar10/)"
    exit 1
  fi
  $PY "$STAGE/tools/make_cifar10.py" "$WORK/data" || exit 1
}

train() {  # run name, deadline (seconds since start), then training options
  local name=$1 deadline=$2
  shift 2
  timeout "$(left "$deadline")" $PY -m training.train --device "$DEVICE" --data-dir "$WORK/data" \
    --output-dir "$WORK/runs/$name" "$@" >>"$WORK/runs/$name.log" 2>>"$WORK/runs/$name.stderr.log"
  echo "$name: exit $? at $SECONDS s"
}
