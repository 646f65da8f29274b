#!/usr/bin/env bash
# greenai's GPU acceptance run: one call on a machine with one NVIDIA GPU.
#   bash benchmarks/gpu-check.sh [--wheels DIR] [--data DIR] [gpu_check.py options...]
# --wheels DIR: install the wheels in DIR first (no network needed; a folder gathered with
#   `pip download` or wheels-for-gpu.sh, including greenai's own wheel from `pip wheel --no-deps .`),
#   into a private folder put on PYTHONPATH behind this checkout. Without it, the current
#   environment must already have greenai's requirements (pip install -e '.[test]').
# --data DIR: a Fashion-MNIST folder (IDX files, .gz or plain; a training subset will do);
#   without it a synthetic dataset is written and accuracy is meaningless.
# Prints one table (also written to $OUT/gpu-check.md, OUT defaulting to /tmp/greenai-gpu-check),
# with each sweep's energy ledger (counters' total, trials, overhead, idle between, unexplained %)
# for the title, packed and RQ1 steps; a step whose ledger leaves over 1 % unexplained fails.
# The title step prints the conv 1 -> 3 energy change next to the H100 reference (+48.9 %) and the
# paper's direction; the order step runs conv 1,2,3 then 3,2,1 (each model within 5 % across the
# orders); the rq2-quick step prints RQ2's energy slopes per layer type next to the paper's Table V.
set -u
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) wheels=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ -n "${wheels:-}" ]; then
  site=/tmp/greenai-site
  start=$(date +%s)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheels"/*.whl \
    || { echo "installing the wheels in $wheels failed" >&2; exit 1; }
  export PYTHONPATH="$repo:$site${PYTHONPATH:+:$PYTHONPATH}"
  export PATH="$site/bin:$PATH"
  echo "installed $(ls "$wheels"/*.whl | wc -l) wheels in $(( $(date +%s) - start )) s"
fi
exec python3 benchmarks/gpu_check.py "${args[@]}"
