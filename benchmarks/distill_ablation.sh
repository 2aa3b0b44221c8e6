#!/usr/bin/env bash
# Distillation ablation on the synthetic benchmark (the README's distillation table):
# R18-1/2 teacher -> R18-1/4 student, 6 epochs, one run folder per (row, seed), then mean ± std per row.
#
#   bash benchmarks/distill_ablation.sh [OUT_DIR] [TEACHER_WEIGHTS] [SEEDS...]
#
# Defaults: OUT_DIR output/ablation, the teacher of configs/synthetic/student_r18_half.yml, seeds 0 1 2.
# Finished runs (a metrics.json present) are kept, so an interrupted sweep resumes where it stopped.
set -euo pipefail
out=${1:-output/ablation}
teacher=${2:-output/synthetic/student_r18_half/model_final.pth}
shift $(( $# < 2 ? $# : 2 ))
seeds=${*:-0 1 2}
python=${PYTHON:-python}
config=configs/synthetic/distill_r18half_to_quarter.yml
[ -f "$teacher" ] || { echo "teacher checkpoint $teacher not found: train it with tools/train_teacher.py --config-file configs/synthetic/student_r18_half.yml" >&2; exit 2; }

declare -A rows=(
  [logit]='("LogitKD",)'
  [rkd]='("RKDDistance", "RKDAngle")'
  [sp]='("SimilarityPreserving",)'
  [pkt]='("PKT",)'
  [listwise]='("ListwiseRanking",)'
  [fitnet]='("FeatureMapDistill",)'
  [combo]='("LogitKD", "RKDDistance", "RKDAngle", "FeatureMapDistill")'
  [logit_rkd]='("LogitKD", "RKDDistance", "RKDAngle")'
  [logit_listwise]='("LogitKD", "ListwiseRanking")'
)
order="logit rkd sp pkt listwise fitnet combo logit_rkd logit_listwise"

for seed in $seeds; do
  run=$out/alone_s$seed
  [ -f "$run/metrics.json" ] || { rm -rf "$run"; $python tools/train_teacher.py \
      --config-file configs/synthetic/student_r18_quarter.yml SOLVER.MAX_EPOCH 6 SEED "$seed" OUTPUT_DIR "$run"; }
  for name in $order; do
    run=$out/${name}_s$seed
    [ -f "$run/metrics.json" ] && continue
    rm -rf "$run"
    $python tools/distill.py --config-file $config DISTILL.LOSSES.NAME "${rows[$name]}" \
      DISTILL.TEACHERS.WEIGHTS "(\"$teacher\",)" SEED "$seed" OUTPUT_DIR "$run"
  done
done
$python benchmarks/summarize_runs.py --group "$out"
