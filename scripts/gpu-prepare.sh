#!/usr/bin/env bash
# Prepares, on a machine with Go, what scripts/gpu-check.sh needs on the GPU machine (which
# has no Go and no network), packed into one folder to carry:
#
#   build/gpu-bundle/bundle.tar.xz   bin/goclip, build/tests/*.test + manifest.tsv (the
#                                    test binary of every package whose tests use libtorch,
#                                    torch/cudatest included), build/gpu-fixtures/ (a copy
#                                    of ../shared/fixtures: tokenizer files, the tiny CLIP)
#
# Then, in a session that has a GPU machine, call the device tool's run with
#   command: bash scripts/gpu-check.sh     carry: ["build/gpu-bundle"]
# (docs/gpu.md). Test binaries are stripped (-s -w) to fit the 64 MiB a call carries.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
GO=${GO:-go}
fixtures=${GOCLIP_FIXTURES_SRC:-$root/../shared/fixtures}

echo "gpu-prepare: building the shim and bin/goclip (make build)"
make build

echo "gpu-prepare: test binaries"
rm -rf build/tests && mkdir -p build/tests
: >build/tests/manifest.tsv
for pkg in $($GO list ./...); do
  # packages with tests whose test binary links libtorch (pure Go packages are CI's)
  [ -n "$($GO list -f '{{len .TestGoFiles}}{{len .XTestGoFiles}}' "$pkg" | tr -d 0)" ] || continue
  $GO list -deps -test "$pkg" | grep -qx goclip/torch || continue
  dir=$($GO list -f '{{.Dir}}' "$pkg")
  rel=${dir#"$root"/}
  name=$(echo "$rel" | tr / _).test
  echo "  $pkg -> build/tests/$name"
  $GO test -c -ldflags='-s -w' -o "build/tests/$name" "$pkg"
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

rm -rf build/gpu-bundle && mkdir -p build/gpu-bundle
parts=(bin/goclip build/tests)
[ -d build/gpu-fixtures ] && parts+=(build/gpu-fixtures)
XZ_OPT=-6T0 tar -cJf build/gpu-bundle/bundle.tar.xz "${parts[@]}"
git rev-parse HEAD >build/gpu-bundle/commit 2>/dev/null || true
size=$(du -sm build/gpu-bundle | cut -f1)
tree=$(git ls-files -co --exclude-standard -z | du -cm --files0-from=- 2>/dev/null | tail -1 | cut -f1)
echo "gpu-prepare: build/gpu-bundle is ${size} MiB; the working tree that travels ~${tree} MiB (limit 64 MiB together)"
if [ $((size + tree)) -ge 64 ]; then
  echo "gpu-prepare: too large to carry" >&2
  exit 1
fi
