#!/usr/bin/env bash
# Prepares, on a machine with Go, what scripts/gpu-check.sh needs on the GPU machine (which
# has no Go and no network), packed into one folder to carry:
#
#   build/gpu-bundle/bundle.tar.xz   bin/goclip, build/tests/*.test + manifest.tsv (the
#                                    test binary of every package whose tests use libtorch,
#                                    torch/cudatest included), build/gpu-fixtures/ (a copy
#                                    of ../shared/fixtures: tokenizer files, the tiny CLIP),
#                                    build/gpu-cuda/include (the CUDA runtime and NCCL
#                                    headers of the venv's nvidia-* wheels that the shim's
#                                    CUDA path includes, crt/ among them: the GPU machine's
#                                    own wheels may lack crt/, and it has no network)
#
#   scripts/gpu-prepare.sh [MAKE ARGUMENTS]     (they go to `make build`)
#
# Then, in a session that has a GPU machine, call the device tool's run with
#   command: bash scripts/gpu-check.sh     carry: ["build/gpu-bundle"]   timeout_s: 480
# (docs/gpu.md). Test binaries are stripped (-s -w) to fit the 64 MiB a call carries.
#
# Environment: GO (default go), PYTHON (the venv's python, whose nvidia-* wheels give the
# CUDA headers; default build/venv/bin/python), GOCLIP_FIXTURES_SRC (../shared/fixtures).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
GO=${GO:-go}
fixtures=${GOCLIP_FIXTURES_SRC:-$root/../shared/fixtures}
python=${PYTHON:-$root/build/venv/bin/python}

echo "gpu-prepare: building the shim and bin/goclip (make build $*)"
make build "$@"

# the build tags make build chose (jpegturbo where libjpeg-turbo is installed), so that the
# test binaries decode JPEGs as bin/goclip does
tags=$(cat build/go-tags.txt 2>/dev/null || true)
echo "gpu-prepare: test binaries (tags: ${tags:-none})"
rm -rf build/tests && mkdir -p build/tests
: >build/tests/manifest.tsv
for pkg in $($GO list ./...); do
  # packages with tests whose test binary links libtorch (pure Go packages are CI's)
  [ -n "$($GO list -f '{{len .TestGoFiles}}{{len .XTestGoFiles}}' "$pkg" | tr -d 0)" ] || continue
  # (grep -c reads all of go list's output: grep -q would end it early, failing the pipe)
  [ "$($GO list -deps -test "$pkg" | grep -cx goclip/torch)" -gt 0 ] || continue
  dir=$($GO list -f '{{.Dir}}' "$pkg")
  rel=${dir#"$root"/}
  name=$(echo "$rel" | tr / _).test
  echo "  $pkg -> build/tests/$name"
  $GO test -c -tags "$tags" -ldflags='-s -w' -o "build/tests/$name" "$pkg"
  printf '%s\t%s\n' "$name" "$rel" >>build/tests/manifest.tsv
done

rm -rf build/gpu-fixtures
if [ -d "$fixtures/clip-tiny-openai" ]; then
  echo "gpu-prepare: copying fixtures from $fixtures (carried, never committed)"
  mkdir -p build/gpu-fixtures
  cp -r "$fixtures"/. build/gpu-fixtures/
  chmod -R u+w build/gpu-fixtures
else
  echo "gpu-prepare: no fixtures at $fixtures: the fixture and text-embedding checks will be skipped there" >&2
fi

# The CUDA headers the shim's CUDA and NCCL sources include (g++ -M with the defines
# build-shim.sh sets), from the pip wheels' include folders: each wheel folder they come
# from is copied whole (cccl/ aside, which they do not use) into build/gpu-cuda/include,
# so that a header of another torch release's choosing is likely there too.
rm -rf build/gpu-cuda
torch_inc=$(sed -n 's/^include: //p' build/shim/shim-build.txt 2>/dev/null || true)
nv_roots=$(cd / && "$python" -c 'import nvidia; print("\n".join(nvidia.__path__))' 2>/dev/null || true)
if [ -n "$torch_inc" ] && [ -n "$nv_roots" ]; then
  echo "gpu-prepare: CUDA headers for the shim (from the nvidia-* wheels of $python)"
  incs=(-isystem "$torch_inc" -isystem "$torch_inc/torch/csrc/api/include")
  nv_incs=()
  while read -r r; do
    while read -r d; do
      nv_incs+=("$d"); incs+=(-isystem "$d")
      [ -d "$d/cccl" ] && incs+=(-isystem "$d/cccl")
    done < <(find "$r" -mindepth 2 -maxdepth 2 -type d -name include | sort)
  done <<<"$nv_roots"
  used=$(for f in $(grep -l 'GOCLIP_WITH_CUDA\|GOCLIP_WITH_NCCL' torch/csrc/*.cc); do
      g++ -std=c++20 -D_GLIBCXX_USE_CXX11_ABI=1 -DGOCLIP_WITH_CUDA=1 -DGOCLIP_WITH_NCCL=1 -Itorch/csrc \
        "${incs[@]}" -M "$f" 2>/dev/null || g++ -std=c++17 -D_GLIBCXX_USE_CXX11_ABI=1 -DGOCLIP_WITH_CUDA=1 \
        -DGOCLIP_WITH_NCCL=1 -Itorch/csrc "${incs[@]}" -M "$f"
    done | tr ' \\' '\n\n' | sort -u)
  mkdir -p build/gpu-cuda/include
  for d in "${nv_incs[@]}"; do
    d=$(readlink -f "$d") # g++ -M names headers by their real paths
    grep -q "^$d/" <<<"$used" || continue
    (cd "$d" && tar -cf - --exclude=./cccl .) | tar -xf - -C build/gpu-cuda/include
    # the cccl headers that are used, if any
    grep "^$d/cccl/" <<<"$used" | while read -r h; do
      mkdir -p "build/gpu-cuda/include/$(dirname "${h#"$d"/cccl/}")"
      cp "$h" "build/gpu-cuda/include/${h#"$d"/cccl/}"
    done || true
  done
  if [ -f build/gpu-cuda/include/cuda_runtime_api.h ] && [ -f build/gpu-cuda/include/crt/host_defines.h ]; then
    echo "  $(grep -c "" <<<"$used") headers used; build/gpu-cuda/include: $(du -sm build/gpu-cuda | cut -f1) MiB"
  else
    echo "gpu-prepare: no CUDA runtime headers (with crt/) found in $python's wheels: none carried" >&2
    rm -rf build/gpu-cuda
  fi
else
  echo "gpu-prepare: no torch include folder in build/shim/shim-build.txt or no nvidia-* wheels in $python: no CUDA headers carried" >&2
fi

rm -rf build/gpu-bundle build/gpu-stage && mkdir -p build/gpu-bundle build/gpu-stage/bin
# bin/goclip without its DWARF (4 MiB less to carry), packed under its own name
strip --strip-debug -o build/gpu-stage/bin/goclip bin/goclip 2>/dev/null || cp bin/goclip build/gpu-stage/bin/goclip
parts=(build/tests)
[ -d build/gpu-fixtures ] && parts+=(build/gpu-fixtures)
[ -d build/gpu-cuda ] && parts+=(build/gpu-cuda)
XZ_OPT=-6T0 tar -cJf build/gpu-bundle/bundle.tar.xz "${parts[@]}" -C build/gpu-stage bin/goclip
rm -rf build/gpu-stage
git rev-parse HEAD >build/gpu-bundle/commit 2>/dev/null || true
size=$(du -sb build/gpu-bundle | cut -f1)
tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
echo "gpu-prepare: build/gpu-bundle is $(mib "$size") MiB; the working tree that travels $(mib "$tree") MiB;" \
  "$(mib $((size + tree))) MiB together (limit 64 MiB)"
if [ $((size + tree)) -ge $((64 * 1048576)) ]; then
  echo "gpu-prepare: too large to carry" >&2
  exit 1
fi
