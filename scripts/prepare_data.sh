#!/usr/bin/env bash
# Prepare a dataset in the layout the models read (README "Datasets" has the full recipes).
# Usage: bash scripts/prepare_data.sh DATASET SRC DST [--key=value ...]
#   DATASET  cityscapes, ade20k, facades or custom
#   SRC      the downloaded archive(s) or extracted folder(s), several separated by commas, e.g.
#            gtFine_trainvaltest.zip,leftImg8bit_trainvaltest.zip
#   DST      output folder; rerun the same command to resume (finished files are kept)
#   --key=value  options of DATASET, e.g. --size=512 (list: python -m common.prepare --help)
# Exit status: 0 all prepared; 1 some input was bad (the report names the files); 2 bad arguments.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
source "$REPO/scripts/common.sh"

[ $# -ge 3 ] || usage "$0"
check_overrides "$0" "${@:4}"
PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" exec python -m common.prepare "$@"
