#!/usr/bin/env bash
# Export a trained model's generator to MINDIR and/or ONNX (ONNX parity with MindSpore is checked).
# Usage: bash scripts/run_export.sh MODEL [MINDIR|ONNX|ALL] [CKPT] [--key=value ...]
#   MODEL   a model folder holding export.py (pix2pix, crn, ...)
#   FORMAT  MINDIR, ONNX or ALL (default ALL)
#   CKPT    generator .ckpt, snapshot folder or checkpoint folder (default: OUT/MODEL/ckpt, latest)
#   --key=value  any other key of common/base_config.yaml or MODEL/default_config.yaml, e.g. --export_norm=running_stats
# Files go to OUT/MODEL/export/, OUT = ${SYNTHZOO_OUTPUTS:-outputs}.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
show_help "$0" export.py "$@"
OUT=${SYNTHZOO_OUTPUTS:-outputs}

[ $# -ge 1 ] || usage "$0"
MODEL=$(check_model "$0" "$1" export.py)
shift
FORMAT=ALL
if [ $# -ge 1 ] && [[ $1 != --* ]]; then FORMAT=$1; shift; fi
case "$FORMAT" in
  MINDIR|ONNX|ALL) ;;
  *) echo "error: format '$FORMAT' is not MINDIR, ONNX or ALL" >&2; usage "$0" ;;
esac
CKPT_ARG=()
if [ $# -ge 1 ] && [[ $1 != --* ]]; then
  [ -e "$1" ] || { echo "error: checkpoint '$1' does not exist" >&2; usage "$0"; }
  CKPT_ARG=(--ckpt="$1"); shift
fi
check_overrides "$0" "$@"
echo "python $MODEL/export.py --export_format=$FORMAT ${CKPT_ARG[*]} --output_dir=$OUT/$MODEL $*"
exec python "$MODEL/export.py" --export_format="$FORMAT" "${CKPT_ARG[@]}" --output_dir="$OUT/$MODEL" "$@"
