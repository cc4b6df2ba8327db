#!/usr/bin/env bash
# Prepare a dataset in the layout the models read (README "Datasets" has the full recipes).
# Usage: bash scripts/prepare_data.sh DATASET SRC DST [--key=value ...]
#   DATASET  cityscapes, ade20k, facades or custom
#   SRC      the downloaded archive(s) or extracted folder(s), several separated by commas, e.g.
#            gtFine_trainvaltest.zip,leftImg8bit_trainvaltest.zip
#   DST      output folder; rerun the same command to resume (finished files are kept)
#   --key=value  options of DATASET, e.g. --size=512 (list: python -m common.prepare --help)
# ade20k also writes CoCosNet's reference lists DST/ref_train.txt and DST/ref_val.txt (what
# cocosnet --data_format=folders reads), unless DST has them already: copied from
#   --ref_list=FILE / --ref_list_val=FILE, else from the official ade20k_ref.txt / ade20k_ref_test.txt in a
#   SRC folder (or its ADEChallengeData2016/), else built by python -m cocosnet.build_ref_list (VGG retrieval;
#   --vgg_path=FILE, --ref_k=N, --retrieval_size=N, --mode=M, --device_target=D go to it).
# Exit status: 0 all prepared; 1 some input was bad (the report names the files); 2 bad arguments.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
source "$REPO/scripts/common.sh"
show_help "$0" "" "$@"

[ $# -ge 3 ] || usage "$0"
check_overrides "$0" "${@:4}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
DATASET=$1 SRC=$2 DST=$3
[ "$DATASET" = ade20k ] || exec python -m common.prepare "$@"

declare -A GIVEN=()
PREP_ARGS=() BUILD_ARGS=()
for arg in "${@:4}"; do
  case "$arg" in
    --ref_list=*) GIVEN[train]=${arg#*=} ;;
    --ref_list_val=*) GIVEN[val]=${arg#*=} ;;
    --vgg_path=*|--ref_k=*|--retrieval_size=*|--mode=*|--device_target=*) BUILD_ARGS+=("$arg") ;;
    *) PREP_ARGS+=("$arg") ;;
  esac
done
for file in "${GIVEN[@]}"; do
  [ -f "$file" ] || { echo "error: reference list $file (--ref_list / --ref_list_val) does not exist" >&2; exit 2; }
done

rc=0
python -m common.prepare ade20k "$SRC" "$DST" "${PREP_ARGS[@]}" || rc=$?
[ "$rc" -le 1 ] || exit "$rc"

official_list() {  # official_list NAME -> the first SRC folder's NAME (or ADEChallengeData2016/NAME), if any
  local src
  IFS=, read -ra srcs <<< "$SRC"
  for src in "${srcs[@]}"; do
    for f in "$src/$1" "$src/ADEChallengeData2016/$1"; do
      [ -f "$f" ] && { echo "$f"; return; }
    done
  done
  return 0
}

declare -A OFFICIAL=([train]=ade20k_ref.txt [val]=ade20k_ref_test.txt)
for split in train val; do
  out="$DST/ref_$split.txt"
  if [ -f "$out" ]; then
    echo "reference list $out exists; kept"
    continue
  fi
  [ -d "$DST/$split" ] && [ -d "$DST/train" ] || continue
  file=${GIVEN[$split]:-$(official_list "${OFFICIAL[$split]}")}
  if [ -n "$file" ]; then
    cp "$file" "$out.tmp" && mv "$out.tmp" "$out"
    echo "reference list $out copied from $file"
  else
    python -m cocosnet.build_ref_list --dataroot="$DST" --data_format=folders --ref_split="$split" \
      --ref_out="$out" "${BUILD_ARGS[@]}"
  fi
done
exit "$rc"
