#!/usr/bin/env bash
# The per-target INT8 tables (README and docs/results/int8.md, one table per CPU kind) in one command:
# every reference model in PTQ (ort_portable, ort_vnni, openvino, tensorrt; MobileNetV3-small also the default
# portable run with its fallback on) and the QAT recipe (ort_portable, openvino), then the table.
#
#   bash benchmarks/int8_targets.sh [OUT_DIR] [MODELS...]
#
# Defaults: OUT_DIR output/int8_targets; MODELS r18q r18ibnq r50ibnzi osnet mnv3s demo. A model's FP32 run is
# trained first where it is missing, with the README's command, into the folder the tables use
# (output/ev/<model>_s0, output/t5/r50ibn_zi_s0, output/synthetic/demo): about 2 hours for all six on 2 cores;
# the quantize runs take about 1 hour more (AMD EPYC, AVX2 only; the AMD Zen 4 machine with AVX-512 VNNI ran all
# of it, training included, in 47 minutes). Runs that finished (a status.json saying accepted, rejected or ungated)
# are kept, so an interrupted sweep resumes where it stopped. A rejected target (exit 3) is a result, not an error;
# any other failure stops the sweep. The openvino target is left out when OpenVINO is not installed
# (pip install 'compressreid[openvino]'); a finished run is not re-run when that changes (delete its folder).
# Every number it prints belongs to this machine's CPU kind: the CPU features are printed above the table, keep
# them next to it.
set -euo pipefail
out=${1:-output/int8_targets}
shift $(( $# < 1 ? $# : 1 ))
models=${*:-r18q r18ibnq r50ibnzi osnet mnv3s demo}
python=${PYTHON:-python}
no_teacher=(DISTILL.TEACHERS.CONFIGS '()' DISTILL.TEACHERS.WEIGHTS '()')

if "$python" -c "import openvino" 2>/dev/null; then
  ptq_targets='("ort_portable","ort_vnni","openvino","tensorrt")'; qat_targets='("ort_portable","openvino")'
else
  echo "OpenVINO is not installed: the openvino target is left out (pip install 'compressreid[openvino]')" >&2
  ptq_targets='("ort_portable","ort_vnni","tensorrt")'; qat_targets='("ort_portable",)'
fi

finished() { [ -f "$1/status.json" ] && grep -q -E '"status": "(accepted|rejected|ungated)"' "$1/status.json"; }

# tools/*.py with exit 3 (a gate failed: the run is kept as a result) allowed; anything else stops the sweep
run() {
  local rc=0
  "$@" || rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; then
    echo "int8_targets.sh: '$*' exited $rc" >&2
    exit "$rc"
  fi
}

train() {  # train <run folder> <args...>: the FP32 model, unless it finished
  local dir=$1; shift
  finished "$dir" || run "$python" tools/train_teacher.py "$@" SEED 0 OUTPUT_DIR "$dir"
}

trained() {  # the FP32 model, trained unless it finished
  case $1 in
    r18q) train output/ev/r18q_s0 --config-file configs/synthetic/student_r18_quarter.yml ;;
    r18ibnq) train output/ev/r18ibnq_s0 --config-file configs/synthetic/student_r18_ibn.yml MODEL.BACKBONE.WIDTH 0.25 \
               MODEL.BACKBONE.FEAT_DIM 128 SOLVER.MAX_EPOCH 6 TEST.GATES '("mAP >= 20",)' ;;
    r50ibnzi) train output/t5/r50ibn_zi_s0 --config-file configs/synthetic/bot_r50_ibn.yml ;;
    osnet) train output/ev/osnet_s0 --config-file configs/synthetic/student_osnet_x0_25.yml ;;
    mnv3s) train output/ev/mnv3s_s0 --config-file configs/synthetic/student_mobilenetv3_small.yml ;;
    demo) finished output/synthetic/demo/quantize \
            || run "$python" tools/compress.py --config-file configs/synthetic/demo.yml ;;
  esac
}

declare -A sources=([r18q]=output/ev/r18q_s0 [r18ibnq]=output/ev/r18ibnq_s0 [r50ibnzi]=output/t5/r50ibn_zi_s0
                    [osnet]=output/ev/osnet_s0 [mnv3s]=output/ev/mnv3s_s0 [demo]=output/synthetic/demo)

quantize() {  # quantize <run folder> <args...>
  local dir=$1; shift
  finished "$dir" || { rm -rf "$dir"; run "$python" tools/quantize.py "$@" OUTPUT_DIR "$dir"; }
}

for model in $models; do  # every name checked before any work
  [ -n "${sources[$model]:-}" ] \
    || { echo "int8_targets.sh: unknown model '$model' (expected r18q r18ibnq r50ibnzi osnet mnv3s demo)" >&2; exit 2; }
done

for model in $models; do
  trained "$model"
  src=${sources[$model]}
  if [ "$model" = demo ]; then  # the pruned student for PTQ, the distilled one for QAT (the demo's own chain)
    quantize "$out/demo_ptq" --config-file configs/synthetic/demo/quantize.yml QUANT.SOURCE "$src/prune" \
      QUANT.TARGETS "$ptq_targets"
    quantize "$out/demo_qat" --config-file configs/synthetic/qat_student.yml QUANT.SOURCE "$src/distill" \
      QUANT.TARGETS "$qat_targets"
    continue
  fi
  fallback=()  # MobileNetV3-small's per-target PTQ without the fallback (all-INT8 in every target), its default
  # run with it; OSNet's with it (its OpenVINO file needs one FP32 node on the AVX2 machine: the sensitivity scan
  # in OpenVINO takes about 12 minutes there)
  case $model in mnv3s) fallback=(QUANT.FALLBACK.ENABLED False) ;; esac
  quantize "$out/${model}_ptq" --config-file configs/synthetic/quant_r18.yml QUANT.SOURCE "$src" "${no_teacher[@]}" \
    QUANT.TARGETS "$ptq_targets" ${fallback[@]+"${fallback[@]}"}  # (an empty array under set -u, bash < 4.4)
  [ "$model" = mnv3s ] && quantize "$out/mnv3s_ptq_portable" --config-file configs/synthetic/quant_r18.yml \
    QUANT.SOURCE "$src" "${no_teacher[@]}"
  [ "$model" = r50ibnzi ] && continue  # the teacher: PTQ only
  quantize "$out/${model}_qat" --config-file configs/synthetic/qat_student.yml QUANT.SOURCE "$src" \
    QUANT.TARGETS "$qat_targets"
done
features=$( { grep -o -w -E 'avx2|avx512f|avx512_vnni|avx_vnni|amx_int8|asimddp' /proc/cpuinfo 2>/dev/null || true; } \
  | sort -u | tr '\n' ' ')
echo "CPU features: ${features:-none of avx2, avx512f, avx512_vnni, avx_vnni, amx_int8, asimddp}"
"$python" benchmarks/summarize_quant.py --targets "$out"/*
