#!/usr/bin/env bash
# One prepared GPU check for the training module (issue 3). Run from the repo root on a CUDA machine:
#   bash bench/gpu_check.sh [CIFAR_DATA_DIR]
# Reports: CIFAR ResNet-20 epoch time (target < 3 s on one H100) from a 3-epoch real run (the first epoch
# includes warm-up), and ResNet-50 training images/s with bf16 + channels_last (target > 2,500), ours vs the
# common PIL DataLoader baseline.
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
DATA=${1:-${TMPDIR:-/tmp}/resnet-lab-cifar}
OUT=${OUT:-${TMPDIR:-/tmp}}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [ ! -d "$DATA/cifar-10-batches-py" ]; then
  "$PY" ../shared/tools/make_cifar10.py "$DATA"
fi
RUN="$OUT/gpu_check_cifar10_resnet20"
rm -rf "$RUN"
"$PY" -m training.train --recipe cifar10_resnet20 --data-dir "$DATA" --output-dir "$RUN" --epochs 3 --device cuda \
  2> "$RUN.stderr.log"
"$PY" - "$RUN/metrics.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
for row in rows:
    print(f"CIFAR ResNet-20 epoch {row['epoch']}: {row['epoch_time']:.2f} s train, {row['images_per_s']:.0f} img/s, "
          f"test error {100 * row['test_error']:.2f}%")
print(f"steady-state epoch time (last epoch): {rows[-1]['epoch_time']:.2f} s (target < 3 s on one H100)")
PYEOF
"$PY" bench/train_throughput.py --device cuda --models cifar_resnet20 resnet50 --imagenet-batch 128 --steps 40 --workers 12
echo "target: resnet50 'ours' over 2,500 img/s (bf16 autocast + channels_last; add --compile to try torch.compile)"
