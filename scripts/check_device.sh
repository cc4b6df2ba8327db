#!/usr/bin/env bash
# Check that MindSpore can train on a device: its runtime libraries, mindspore.run_check() and one tiny
# pix2pix train step (on a small generated demo set, outputs in a temporary folder).
# Usage: bash scripts/check_device.sh [DEVICE]
#   DEVICE  CPU (default), GPU or Ascend. GPU first checks the CUDA 11 libraries of MindSpore's GPU plugin
#           (installed by pip install -r requirements-gpu.txt) and names every missing one with its package.
# Exit status: 0 the device works; 1 something is missing or failed (the output says what); 2 bad arguments.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
show_help "$0" "" "$@"
[ $# -le 1 ] || { echo "error: unexpected argument '$2'" >&2; usage "$0"; }
DEVICE=$(check_device "$0" "${1:-CPU}")
if [ "$DEVICE" = GPU ]; then
  gpu_library_path
  echo "== CUDA libraries of the GPU plugin"
  if ! python -m common.gpu_runtime check; then
    echo "error: MindSpore cannot load its GPU plugin; install what is listed above and run this check again" >&2
    exit 1
  fi
fi
echo "== mindspore.run_check() on $DEVICE"
python -c "import common, mindspore as ms; ms.set_device('$DEVICE'); ms.run_check()" ||
  { echo "error: mindspore.run_check() failed on $DEVICE (see above)" >&2; exit 1; }
echo "== one pix2pix train step on $DEVICE"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
SYNTHZOO_CACHE=${SYNTHZOO_CACHE:-$TMP/cache} python pix2pix/train.py --device_target="$DEVICE" --output_dir="$TMP/out" \
  --max_steps=1 --netG=unet_64 --ngf=8 --ndf=8 --crop_size=64 --load_size=64 --demo_size=64 --demo_train=2 \
  --demo_val=1 --num_workers=0 --log_every=1 ||
  { echo "error: the pix2pix train step failed on $DEVICE (see above; --debug shows the traceback)" >&2; exit 1; }
echo "OK: MindSpore trains on $DEVICE"
