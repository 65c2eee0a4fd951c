#!/usr/bin/env bash
# Stage 1: default-model candidates, the paper's full CIFAR-10 recipe (64k iterations), resumable across runs.
#   CANDIDATES: recipes trained one after another with --cuda-graph (GRAPH=0: eager), each with the EXTRA options;
#   runs found in $STAGE/runs continue where they stopped (RESUME=0 starts afresh; checkpoints are atomic).
#   TRAIN_DEADLINE: stop training that many seconds after the start, so that the archive step still runs within a
#   job's time limit; the next run resumes from the archives.
# Results in $OUT: stage1_default_model.log, logs.tgz (every run's metrics and logs), one full_<run>.tgz per
# candidate (its folder with last.pt, to resume from: `tar xzf full_<run>.tgz -C .gpu`).
# Afterwards, on any machine: python -m report.runrecord RUN --command "..."; python -m report.modelcard --record
# docs/runs/NAME --checkpoint RUN/checkpoints/last.pt; python -m report.reproduction; python -m report.readme.
#
#   STAGE=.gpu bash bench/gpu/stage1_default_model.sh
#   PYTHON=.venv/bin/python DEVICE=cpu GRAPH=0 CANDIDATES=cifar10_resnet20 TRAIN_DEADLINE=300 STAGE=../shared \
#     EXTRA="--max-train-samples 512 --max-eval-samples 200 --epochs 1" bash bench/gpu/stage1_default_model.sh
#                                                                                       # a dry run on a CPU
source "$(dirname "$0")/common.sh"
CANDIDATES=${CANDIDATES:-"cifar10_resnet56 cifar10_resnet110"}
EXTRA=${EXTRA:-}
TRAIN_DEADLINE=${TRAIN_DEADLINE:-520}
RESUME=${RESUME:-1}
GRAPH=${GRAPH:-1}
machine
cifar_data
if [ "$RESUME" = 1 ] && [ -n "$(ls -A "$STAGE/runs" 2>/dev/null)" ]; then cp -r "$STAGE"/runs/* "$WORK/runs/"; fi
graph=()
if [ "$GRAPH" = 1 ]; then graph=(--cuda-graph); fi
read -r -a extra <<<"$EXTRA"
for recipe in $CANDIDATES; do
  name="full_${recipe}"
  resume=()
  if [ -f "$WORK/runs/$name/checkpoints/last.pt" ]; then resume=(--resume); fi
  if [ "$SECONDS" -lt "$TRAIN_DEADLINE" ]; then
    train "$name" "$TRAIN_DEADLINE" --recipe "$recipe" "${extra[@]}" "${graph[@]}" "${resume[@]}"
  fi
  tail -n 2 "$WORK/runs/$name.log"
done
echo "== pack ($SECONDS s)"
tar czf "$OUT/logs.tgz" -C "$WORK" --exclude='*/checkpoints' runs
for run in "$WORK"/runs/full_*/; do
  name=$(basename "$run")
  tar czf "$OUT/$name.tgz" -C "$WORK" --exclude='*/best.pt' "runs/$name" "runs/$name.log" "runs/$name.stderr.log"
done
ls -la "$OUT"
