#!/usr/bin/env bash
# Evaluate trained models and print one results table (also written to OUT/eval_summary.json,
# OUT = ${SYNTHZOO_OUTPUTS:-outputs}).
# Usage: bash scripts/run_eval.sh [MODEL|all] [DEVICE] [--key=value ...]
#   MODEL   pix2pix, crn, ... or all (default): every model with a checkpoint under OUT/MODEL/ckpt
#   DEVICE  CPU (default), GPU or Ascend
#   --key=value  passed to each evaluated model that has the key (e.g. --num_val=50 to all, --eval_protocol=eval
#                to pix2pix only); a key no evaluated model has is an error
# Per-model results: OUT/MODEL/eval/{metrics.json,index.html}.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
show_help "$0" eval.py "$@"
OUT=${SYNTHZOO_OUTPUTS:-outputs}

MODEL=all
case "${1:-}" in
  ""|--*|CPU|GPU|Ascend) ;;  # MODEL left out
  *) MODEL=$1; shift ;;
esac
DEVICE=CPU
if [ $# -ge 1 ] && [[ $1 != --* ]]; then DEVICE=$(check_device "$0" "$1"); shift; fi
check_overrides "$0" "$@"
if [ "$DEVICE" = GPU ]; then gpu_library_path; fi  # the CUDA 11 wheels of requirements-gpu.txt

if [ "$MODEL" = all ]; then
  MODELS=()
  for m in $(models_with eval.py); do
    [ -f "$OUT/$m/ckpt/latest" ] && MODELS+=("$m")
  done
  if [ ${#MODELS[@]} -eq 0 ]; then
    echo "error: no model has a checkpoint under $OUT/MODEL/ckpt; train one first (bash scripts/run_train.sh pix2pix CPU)" >&2
    exit 1
  fi
else
  MODELS=("$(check_model "$0" "$MODEL" eval.py)")
fi
# each model's share of the overrides, checked before any evaluation starts
USED=()
for m in "${MODELS[@]}"; do
  mapfile -t ARGS < <(python -m common.config known "$m/default_config.yaml" "$@")
  USED+=("${ARGS[@]}")
done
for arg in "$@"; do
  case " ${USED[*]} " in
    *" $arg "*) ;;
    *) echo "error: no evaluated model (${MODELS[*]}) has the key of '$arg'; see MODEL/eval.py --help" >&2; exit 2 ;;
  esac
done
for m in "${MODELS[@]}"; do
  mapfile -t ARGS < <(python -m common.config known "$m/default_config.yaml" "$@")
  echo "== evaluating $m ${ARGS[*]}"
  python "$m/eval.py" --device_target="$DEVICE" --output_dir="$OUT/$m" "${ARGS[@]}"
done
python -m common.report "$OUT"
