#!/usr/bin/env bash
# Installs the Debian packages goclip's build still takes from apt, when they are missing:
#   libgloo-dev   the Gloo headers c10d's ProcessGroupGloo.hpp includes (goclip launch and
#                 data-parallel training on the CPU); the torch wheel ships Gloo's library
#                 but not its headers
# As root it runs apt-get; otherwise it says what to run and what will not work without it
# (the shim then builds without Gloo), and succeeds. Everything else
# (libtorch, CUDA headers, NCCL, the Python peers) comes from the venv (third_party/venv.sh).
set -euo pipefail
pkgs=(libgloo-dev)
need=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
  echo "apt: missing ${need[*]} (sudo apt-get install ${need[*]}); without the Gloo headers the shim builds without Gloo, and goclip launch / data-parallel training on the CPU will say so" >&2
  exit 0
fi
echo "apt: installing ${need[*]}" >&2
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
