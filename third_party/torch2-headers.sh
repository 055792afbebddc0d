#!/usr/bin/env bash
# Fetches Debian trixie's libtorch-dev (2.x) and unpacks it into $1 without installing it,
# under a private apt configuration, so the shim can be syntax-checked against 2.x headers.
set -euo pipefail
dest=${1:?usage: torch2-headers.sh DEST}
if [ -f "$dest/usr/include/torch/csrc/api/include/torch/version.h" ]; then exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$dest"
echo "deb http://deb.debian.org/debian trixie main" > "$work/sources.list"
opts=(-o Dir::Etc::sourcelist="$work/sources.list" -o Dir::Etc::sourceparts=- \
      -o Dir::State::Lists="$work/lists" -o Dir::Cache="$work/cache" \
      -o APT::Get::List-Cleanup=0 -o Debug::NoLocking=1)
apt-get "${opts[@]}" update -qq
(cd "$work" && apt-get "${opts[@]}" download libtorch-dev)
dpkg-deb -x "$work"/libtorch-dev_*.deb "$dest"
grep -h "define TORCH_VERSION_M" "$dest/usr/include/torch/csrc/api/include/torch/version.h"
