#!/usr/bin/env bash
# Prints the CMake prefix of the libtorch that goclip's shim is built against, for
# scripts/build-shim.sh's cmake method. The choice is the one build-shim.sh documents:
# $LIBTORCH (a libtorch folder or a CMake prefix); else GOCLIP_TORCH=venv (the default:
# build/venv's torch), python ($PYTHON, default python3) or debian (libtorch-dev).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

has_config() { [ -f "$1/Torch/TorchConfig.cmake" ] || [ -f "$1/TorchConfig.cmake" ] || [ -f "$1/share/cmake/Torch/TorchConfig.cmake" ]; }

if [ -n "${LIBTORCH:-}" ]; then
  if [ -f "$LIBTORCH/share/cmake/Torch/TorchConfig.cmake" ]; then echo "$LIBTORCH/share/cmake"; exit 0; fi
  if has_config "$LIBTORCH"; then echo "$LIBTORCH"; exit 0; fi
  echo "find-libtorch: LIBTORCH=$LIBTORCH holds no TorchConfig.cmake" >&2
  exit 1
fi

choice=${GOCLIP_TORCH:-}
[ -n "$choice" ] || { if [ -n "${PYTHON:-}" ]; then choice=python; else choice=venv; fi; }
case "$choice" in
  venv|python)
    py=${PYTHON:-python3}
    [ "$choice" = venv ] && py=$root/build/venv/bin/python
    p=$(cd / && "$py" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)' 2>/dev/null || true)
    if [ -n "$p" ] && has_config "$p"; then echo "$p"; exit 0; fi
    echo "find-libtorch: $py has no torch with a CMake config (make venv makes build/venv)" >&2
    exit 1 ;;
  debian)
    d=/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)/cmake
    if has_config "$d"; then echo "$d/Torch"; exit 0; fi
    echo "find-libtorch: Debian's libtorch-dev is not installed (apt-get install libtorch-dev)" >&2
    exit 1 ;;
  *) echo "find-libtorch: GOCLIP_TORCH=$choice: want venv, python or debian" >&2; exit 2 ;;
esac
