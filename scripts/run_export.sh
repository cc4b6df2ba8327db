#!/usr/bin/env bash
# Export a trained model's generator to MINDIR and/or ONNX (ONNX parity with MindSpore is checked).
# Usage: bash scripts/run_export.sh MODEL [MINDIR|ONNX|ALL] [CKPT] [--key=value ...]
#   MODEL   a model folder holding export.py (pix2pix, crn, ...)
#   FORMAT  MINDIR, ONNX or ALL (default ALL)
#   CKPT    generator .ckpt, snapshot folder or checkpoint folder (default: the model config's)
#   --key=value  any other key of MODEL/default_config.yaml, e.g. --export_norm=running_stats
# Files go to outputs/MODEL/export/.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '3,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

[ $# -ge 1 ] || usage
MODEL=${1%/}; shift
if [ ! -f "$MODEL/export.py" ] || [ ! -f "$MODEL/default_config.yaml" ]; then
  echo "error: '$MODEL' is not a model folder with export.py; choose one of:" \
       $(for f in */export.py; do [ -f "${f%/*}/default_config.yaml" ] && echo "${f%/*}"; done) >&2
  usage
fi
FORMAT=ALL
if [ $# -ge 1 ] && [[ $1 != --* ]]; then FORMAT=$1; shift; fi
case "$FORMAT" in MINDIR|ONNX|ALL) ;; *) echo "error: format '$FORMAT' is not MINDIR, ONNX or ALL" >&2; usage ;; esac
CKPT=""
if [ $# -ge 1 ] && [[ $1 != --* ]]; then CKPT=$1; shift; fi
if [ -n "$CKPT" ] && [ ! -e "$CKPT" ]; then echo "error: checkpoint '$CKPT' does not exist" >&2; usage; fi
for arg in "$@"; do
  [[ $arg == --* ]] || { echo "error: unexpected argument '$arg'" >&2; usage; }
done

# Spell the three settings with MODEL's own config keys: the format key is export_format (ALL may be
# called "both"), the checkpoint key ckpt or checkpoint, the destination export_dir or output_dir.
mapfile -t MAPPED < <(python - "$MODEL/default_config.yaml" "$FORMAT" "$CKPT" "outputs/$MODEL" <<'PY'
import sys
import yaml
config, fmt, ckpt, out = sys.argv[1:]
docs = list(yaml.safe_load_all(open(config)))
values, choices = docs[0], (docs[2] if len(docs) > 2 else {}) or {}
allowed = choices.get("export_format", ["MINDIR", "ONNX", "ALL"])
if fmt == "ALL" and "ALL" not in allowed and "both" in allowed:
    fmt = "both"
print(f"--export_format={fmt}")
if ckpt:
    print(f"--{'ckpt' if 'ckpt' in values else 'checkpoint'}={ckpt}")
print(f"--export_dir={out}/export" if "export_dir" in values else f"--output_dir={out}")
PY
)
echo "python $MODEL/export.py ${MAPPED[*]} $*"
python "$MODEL/export.py" "${MAPPED[@]}" "$@"
