#!/usr/bin/env bash
# Data-parallel training with msrun (MindSpore's launcher): one worker per device, each on its shard of
# the data, gradients averaged across all workers inside the compiled step, snapshots/logs/images by rank 0.
# Usage: bash scripts/run_distribute_train.sh MODEL DEVICE NUM_WORKERS [launcher flags] [--key=value ...]
#   MODEL        pix2pix, crn, ... (a folder holding train.py)
#   DEVICE       CPU, GPU or Ascend (GPU: the CUDA 11 libraries of requirements-gpu.txt are put on
#                LD_LIBRARY_PATH; check them with bash scripts/check_device.sh GPU)
#   NUM_WORKERS  workers on this node (e.g. 8 for 8 GPUs; 2 for a CPU try-out)
#   --key=value  any key of common/base_config.yaml or MODEL/default_config.yaml (batch_size is per worker)
# Launcher flags, for several nodes (run the same command on every node, each with its --node_rank):
#   --worker_num=N        workers on all nodes together (default: NUM_WORKERS, i.e. one node)
#   --local_worker_num=N  workers on this node (the same as NUM_WORKERS; given, it must agree)
#   --master_addr=HOST    address of node 0, which runs the scheduler (default 127.0.0.1)
#   --master_port=PORT    scheduler port, free on node 0 (default: $MASTER_PORT or 8118)
#   --node_rank=R         this node's index, 0 .. nodes-1 (default 0); ranks R*NUM_WORKERS ... on this node
#   --cluster_time_out=S  seconds to wait for every worker to join (default 600)
# Outputs go to ${SYNTHZOO_OUTPUTS:-outputs}/MODEL/ (on a folder shared by all nodes for --resume), the
# log of each rank to its msrun_log/worker_<rank>.log. Ctrl-C or SIGTERM stops every worker after the same
# step; rank 0 saves a snapshot and --resume=true continues it with the same number of workers. A worker
# that dies ends the whole job (exit status 1) with the end of its log printed, once the scheduler has
# missed its heartbeats for MS_NODE_TIMEOUT seconds (environment variable, MindSpore's default 30).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
show_help "$0" train.py "$@"

[ $# -ge 3 ] || usage "$0"
MODEL=$(check_model "$0" "$1" train.py)
DEVICE=$(check_device "$0" "$2")
LOCAL=$3
is_count() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }
is_count "$LOCAL" || { echo "error: NUM_WORKERS '$LOCAL' is not a positive integer" >&2; usage "$0"; }
shift 3
check_overrides "$0" "$@"

TOTAL=$LOCAL ADDR=127.0.0.1 PORT=${MASTER_PORT:-8118} NODE=0 TIMEOUT=600 KEYS=()
for arg in "$@"; do
  value=${arg#*=}
  case "$arg" in
    --worker_num=*) TOTAL=$value ;;
    --local_worker_num=*)
      [ "$value" = "$LOCAL" ] || { echo "error: --local_worker_num=$value differs from NUM_WORKERS=$LOCAL (the workers on this node); give one value" >&2; exit 2; } ;;
    --master_addr=*) ADDR=$value ;;
    --master_port=*) PORT=$value ;;
    --node_rank=*) NODE=$value ;;
    --cluster_time_out=*) TIMEOUT=$value ;;
    *) KEYS+=("$arg") ;;
  esac
done
is_count "$TOTAL" || { echo "error: --worker_num=$TOTAL is not a positive integer" >&2; exit 2; }
[[ $NODE =~ ^[0-9]+$ ]] || { echo "error: --node_rank=$NODE is not a node index (0, 1, ...)" >&2; exit 2; }
[[ $PORT =~ ^[0-9]+$ ]] && [ "$PORT" -ge 1024 ] && [ "$PORT" -le 65535 ] ||
  { echo "error: --master_port=$PORT is not a port number in 1024..65535" >&2; exit 2; }
if [ $((TOTAL % LOCAL)) -ne 0 ] || [ "$NODE" -ge $((TOTAL / LOCAL)) ]; then
  echo "error: --worker_num=$TOTAL, NUM_WORKERS=$LOCAL and --node_rank=$NODE do not fit: worker_num must be" \
       "NUM_WORKERS x nodes and node_rank below the number of nodes ($((TOTAL / LOCAL)))" >&2
  exit 2
fi
python -m common.config check "$MODEL/default_config.yaml" "${KEYS[@]}" || exit 2  # one error line, not one per rank
if [ "$DEVICE" = GPU ]; then gpu_library_path; fi  # the CUDA 11 wheels of requirements-gpu.txt

OUT=${SYNTHZOO_OUTPUTS:-outputs}/$MODEL
LOGS=$OUT/msrun_log
mkdir -p "$LOGS"
FIRST=$((NODE * LOCAL))
RANK_LOGS=()
for ((r = FIRST; r < FIRST + LOCAL; r++)); do RANK_LOGS+=("$LOGS/worker_$r.log"); done
echo "msrun: $LOCAL of $TOTAL workers on this node (ranks $FIRST..$((FIRST + LOCAL - 1)), node $NODE, scheduler" \
     "$ADDR:$PORT); outputs in $OUT"
echo "per-rank logs: $LOGS/worker_<rank>.log$([ "$NODE" = 0 ] && echo "; scheduler: $LOGS/scheduler.log")" \
     "(rank 0 also writes $OUT/train.log)"

# msrun runs in its own session: a Ctrl-C in this terminal reaches this script only, which asks the
# workers to stop (msrun itself would kill them before rank 0 can save).
STOPPED=""
stop_workers() {
  STOPPED=$1
  echo "$1: asking the workers to stop after their current step (rank 0 saves a snapshot) ..." >&2
  for pid in $(ps -o pid= --ppid "$MSRUN" 2>/dev/null); do
    if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx MS_ROLE=MS_WORKER; then
      kill -s "$1" "$pid" 2>/dev/null || true
    fi
  done
}
setsid msrun --worker_num="$TOTAL" --local_worker_num="$LOCAL" --master_addr="$ADDR" --master_port="$PORT" \
  --node_rank="$NODE" --log_dir="$LOGS" --join=True --cluster_time_out="$TIMEOUT" \
  "$MODEL/train.py" --device_target="$DEVICE" --output_dir="$OUT" "${KEYS[@]}" &
MSRUN=$!
trap 'stop_workers INT' INT
trap 'stop_workers TERM' TERM
RC=0
while true; do
  wait "$MSRUN" && RC=0 || RC=$?
  kill -0 "$MSRUN" 2>/dev/null || break  # wait returns early when a trapped signal arrives
done
trap - INT TERM
if [ -n "$STOPPED" ]; then
  echo "stopped by SIG$STOPPED; snapshot: $OUT/ckpt (latest); continue with the same command and --resume=true" >&2
  exit $([ "$STOPPED" = INT ] && echo 130 || echo 143)
fi
STOP_LINE=$(cat "${RANK_LOGS[@]}" 2>/dev/null | grep -a -m1 -E '^stopped by SIG(INT|TERM)' || true)
if [ "$RC" -ne 0 ] && [ -n "$STOP_LINE" ]; then  # a worker was signalled directly: every rank stopped with it
  echo "$STOP_LINE; snapshot: $OUT/ckpt (latest)" >&2
  exit $([[ $STOP_LINE == "stopped by SIGINT"* ]] && echo 130 || echo 143)
fi
if [ "$RC" -ne 0 ]; then
  echo "error: the distributed job failed (msrun exit status $RC); the end of each worker log that reports an error:" >&2
  for log in "${RANK_LOGS[@]}"; do
    if [ -f "$log" ] && grep -aqE '^error: |Traceback|Error' "$log"; then
      echo "== $log" >&2
      grep -avE '^\[(INFO|WARNING)\]' "$log" | tail -n 8 >&2
    fi
  done
  LOST=$(grep -a -m1 -oE "worker [0-9]+ is the first one timed out" "$LOGS/scheduler.log" 2>/dev/null || true)
  if [ -n "$LOST" ]; then
    echo "the scheduler lost contact with ${LOST% is the first one timed out} first: it died or was killed (a killed" \
         "worker leaves no error line; the others are ended MS_NODE_TIMEOUT s after it died)" >&2
  fi
  exit 1
fi
echo "done: $OUT (per-rank logs in $LOGS)"
