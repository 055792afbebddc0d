#!/usr/bin/env bash
# Prints the CMake prefix of the libtorch that goclip's shim should build against.
#
# Order: $LIBTORCH (a libtorch folder or a CMake prefix); the CMake prefix of a Python
# `torch` (python3 on PATH, then Debian's /usr/bin/python3) -- this is how the GPU machine
# and the CUDA Docker image build; Debian's libtorch-dev. When none is found and we are
# root on Debian/Ubuntu, libtorch-dev and cmake are installed with apt; otherwise the
# commands to run are printed and the script fails.
set -euo pipefail

has_config() { [ -f "$1/Torch/TorchConfig.cmake" ] || [ -f "$1/TorchConfig.cmake" ] || [ -f "$1/share/cmake/Torch/TorchConfig.cmake" ]; }

prefix_of() { # normalise a libtorch folder or CMake prefix to something find_package accepts
  if [ -f "$1/share/cmake/Torch/TorchConfig.cmake" ]; then echo "$1/share/cmake"; else echo "$1"; fi
}

if [ -n "${LIBTORCH:-}" ]; then
  if has_config "$LIBTORCH"; then prefix_of "$LIBTORCH"; exit 0; fi
  echo "find-libtorch: LIBTORCH=$LIBTORCH holds no TorchConfig.cmake" >&2
  exit 1
fi

for py in python3 /usr/bin/python3; do
  command -v "$py" >/dev/null 2>&1 || continue
  p=$("$py" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)' 2>/dev/null || true)
  if [ -n "$p" ] && has_config "$p"; then echo "$p"; exit 0; fi
done

debian=/usr/lib/x86_64-linux-gnu/cmake
if has_config "$debian"; then echo "$debian/Torch"; exit 0; fi

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "find-libtorch: installing libtorch-dev and cmake with apt" >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libtorch-dev libgloo-dev libopenblas0-pthread cmake >&2
  if has_config "$debian"; then echo "$debian/Torch"; exit 0; fi
fi

cat >&2 <<'MSG'
find-libtorch: no libtorch found. Either
  sudo apt-get install libtorch-dev cmake        (Debian/Ubuntu, CPU)
or install PyTorch for python3 (pip install torch), or set LIBTORCH to an unpacked
libtorch folder from pytorch.org.
MSG
exit 1
