#!/usr/bin/env bash
# Paint-a-scene web demo: paint a label map in the model's class palette (or upload one), get the photo.
# Usage: bash scripts/run_demo.sh [MODEL] [--ckpt=PATH] [--port=7860] [--host=127.0.0.1] [--backend=mindspore|onnx]
#                                 [--key=value ...]
#   MODEL        pix2pix (default), crn, cocosnet (with an exemplar upload) or osmis (samples image+mask pairs)
#   --ckpt       a checkpoint of MODEL; default: the newest snapshot under ${SYNTHZOO_OUTPUTS:-outputs}/MODEL/ckpt,
#                and when there is none the built-in demo model is trained there first (a few minutes)
#   --backend    onnx runs the newest bash scripts/run_export.sh MODEL ONNX export with onnxruntime (all four)
#   --key=value  any key of MODEL/default_config.yaml, as for its predict.py (e.g. --eval_protocol=eval); the
#                runtime keys (--device_target, --mode, --cpu_conv, --precision) hold for every model the page loads
# Serves http://127.0.0.1:7860 (local only; --host=0.0.0.0 exposes it). Needs: pip install -r requirements-demo.txt
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
source scripts/common.sh
show_help "$0" predict.py "$@"

MODEL=pix2pix
if [ $# -ge 1 ] && [[ $1 != --* ]]; then MODEL=$(check_model "$0" "$1" predict.py); shift; fi
check_overrides "$0" "$@"
python -c "import gradio" 2>/dev/null || { echo "error: gradio is not installed; run: pip install -r requirements-demo.txt" >&2; exit 2; }
exec python -m demo.app "$MODEL" "$@"
