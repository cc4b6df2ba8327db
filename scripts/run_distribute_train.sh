#!/usr/bin/env bash
# Data-parallel training with msrun (MindSpore 2.x launcher): one worker per device, sharded data,
# gradients averaged across workers, snapshots and logs written by rank 0.
# Usage: bash scripts/run_distribute_train.sh MODEL DEVICE NUM_WORKERS [--key=value ...]
#   MODEL        pix2pix, crn, ... (a folder holding train.py)
#   DEVICE       CPU, GPU or Ascend
#   NUM_WORKERS  processes on this machine (e.g. 8 for 8 GPUs; 2 for a CPU test run)
#   --key=value  any key of MODEL/default_config.yaml
# Outputs go to ${SYNTHZOO_OUTPUTS:-outputs}/MODEL/, worker logs to its msrun_log/worker_<rank>.log;
# set MASTER_PORT to change the port (8118).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

[ $# -ge 3 ] || usage "$0"
MODEL=$(check_model "$0" "$1" train.py)
DEVICE=$(check_device "$0" "$2")
WORKERS=$3
[[ $WORKERS =~ ^[1-9][0-9]*$ ]] || { echo "error: NUM_WORKERS '$WORKERS' is not a positive integer" >&2; usage "$0"; }
shift 3
check_overrides "$0" "$@"
exec msrun --worker_num="$WORKERS" --local_worker_num="$WORKERS" --master_port="${MASTER_PORT:-8118}" \
  --log_dir="${SYNTHZOO_OUTPUTS:-outputs}/$MODEL/msrun_log" --join=True --cluster_time_out=600 \
  "$MODEL/train.py" --device_target="$DEVICE" --output_dir="${SYNTHZOO_OUTPUTS:-outputs}/$MODEL" "$@"
