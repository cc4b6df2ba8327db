# Shared argument checks for scripts/run_*.sh (sourced, not run).

usage() {  # print the calling script's header comment and exit 2
  sed -n '2,/^set -/p' "$1" | grep '^#' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

show_help() {  # show_help SCRIPT ENTRY ARGS...: with --help or -h among ARGS, print SCRIPT's usage (and, when ARGS
              # start with a model, its ENTRY's keys; ENTRY '' for none) on stdout and exit 0
  local script=$1 entry=$2 arg
  shift 2
  for arg in "$@"; do
    if [[ $arg == --help || $arg == -h ]]; then
      sed -n '2,/^set -/p' "$script" | grep '^#' | sed 's/^# \{0,1\}//'
      if [ -n "$entry" ] && [ -f "${1%/}/$entry" ]; then echo; python "${1%/}/$entry" --help; fi
      exit 0
    fi
  done
}

models_with() {  # model folders that hold the given entry script
  for f in */"$1"; do [ -f "${f%/*}/default_config.yaml" ] && echo "${f%/*}"; done
}

check_model() {  # check_model SCRIPT MODEL ENTRY -> prints MODEL without a trailing slash
  local model=${2%/}
  if [ ! -f "$model/$3" ] || [ ! -f "$model/default_config.yaml" ]; then
    echo "error: '$2' is not a model with $3; choose one of: $(models_with "$3" | tr '\n' ' ')" >&2
    usage "$1"
  fi
  echo "$model"
}

check_device() {  # check_device SCRIPT DEVICE -> prints DEVICE
  case "$2" in
    CPU|GPU|Ascend) echo "$2" ;;
    *) echo "error: device '$2' is not CPU, GPU or Ascend" >&2; usage "$1" ;;
  esac
}

check_overrides() {  # every remaining argument must look like --key=value
  local script=$1; shift
  for arg in "$@"; do
    [[ $arg == --* ]] || { echo "error: unexpected argument '$arg' (options are --key=value)" >&2; usage "$script"; }
  done
}

gpu_library_path() {  # put the nvidia-*-cu11 wheels' library folders (requirements-gpu.txt) on LD_LIBRARY_PATH
  local dirs
  dirs=$(python -m common.gpu_runtime ld_path)
  if [ -n "$dirs" ]; then export LD_LIBRARY_PATH="$dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi
}
