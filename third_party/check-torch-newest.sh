#!/usr/bin/env bash
# Syntax-checks every torch/csrc/*.cc against the headers of another torch release (the
# newest PyPI serves, by default the Makefile's TORCH_NEWEST), with GOCLIP_WITH_CUDA and
# GOCLIP_WITH_NCCL defined, so that an API change in libtorch shows up in CI before users
# meet it. Only the wheel's torch/include is unpacked (into build/torch-VERSION); the CUDA
# runtime headers, CCCL and NCCL come from the venv's nvidia-* wheels.
#
#   third_party/check-torch-newest.sh VERSION|latest
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
version=${1:?usage: check-torch-newest.sh VERSION|latest}
py=build/venv/bin/python
wheels=${GOCLIP_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/goclip/wheels}
if [ "$version" = latest ]; then
  version=$("$py" -m pip index versions torch 2>/dev/null | sed -n 's/^torch (\(.*\))$/\1/p')
  [ -n "$version" ] || { echo "check-torch-newest: could not ask PyPI for torch's versions" >&2; exit 1; }
fi
dest=build/torch-$version
if [ ! -f "$dest/torch/include/torch/headeronly/version.h" ] && [ ! -f "$dest/torch/include/torch/csrc/api/include/torch/version.h" ]; then
  mkdir -p "$wheels"
  whl=$(ls "$wheels"/torch-"$version"-*.whl 2>/dev/null | head -1 || true)
  if [ -z "$whl" ]; then
    echo "check-torch-newest: fetching the torch $version wheel (headers only are used)" >&2
    "$py" -m pip download --disable-pip-version-check --progress-bar off --no-deps -q -d "$wheels" "torch==$version"
    whl=$(ls "$wheels"/torch-"$version"-*.whl | head -1)
  fi
  rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
  "$py" - "$whl" "$dest.tmp" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith("torch/include/")])
PY
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
fi
inc=$dest/torch/include
read -r major minor < <(sed -n 's/^#define TORCH_VERSION_M\(AJOR\|INOR\) \([0-9]*\).*/\2/p' \
  "$inc/torch/headeronly/version.h" 2>/dev/null | paste -sd' ')
std=c++17
if [ "$major" -gt 2 ] || { [ "$major" -eq 2 ] && [ "$minor" -ge 12 ]; }; then std=c++20; fi
nv=$("$py" -c 'import nvidia, os; print(next(p for p in nvidia.__path__ if os.path.isdir(p)))')
incs=(-Itorch/csrc -isystem "$inc" -isystem "$inc/torch/csrc/api/include"
  -isystem "$nv/cu13/include" -isystem "$nv/cu13/include/cccl" -isystem "$nv/nccl/include")
echo "check-torch-newest: torch $major.$minor headers ($version), -std=$std, CUDA and NCCL on" >&2
fail=0
for f in torch/csrc/*.cc; do
  if g++ -std=$std -fsyntax-only -D_GLIBCXX_USE_CXX11_ABI=1 -DGOCLIP_WITH_CUDA=1 -DGOCLIP_WITH_NCCL=1 \
      -Wall -Wno-unused-function "${incs[@]}" "$f" 2>"build/check-$(basename "$f").log"; then
    echo "  ok    $f" >&2
  else
    echo "  FAIL  $f (build/check-$(basename "$f").log):" >&2
    grep -m 10 'error' "build/check-$(basename "$f").log" >&2 || true
    fail=1
  fi
done
exit $fail
