#!/usr/bin/env bash
# Installs the Debian (or Ubuntu) packages goclip's build still takes from apt, when they
# are missing:
#   libgloo-dev          the Gloo headers c10d's ProcessGroupGloo.hpp includes (goclip
#                        launch and data-parallel training on the CPU); the torch wheel
#                        ships Gloo's library but not its headers
#   libjpeg62-turbo-dev  libjpeg-turbo (libjpeg-turbo8-dev on Ubuntu), the JPEG decoder
#                        goclip is built with when it is there (internal/jpegturbo,
#                        third_party/find-jpegturbo.sh): PIL's own decoder, linked
#                        statically, so bin/goclip needs no libjpeg where it runs
# and with --test (make test) also
#   python3-pil          Debian's PIL for Debian's python3, built on the same libjpeg-turbo:
#                        the reference dataset's TestJPEGTurboMatchesDebianPIL compares with
# As root it runs apt-get; otherwise it says what to run and what will not work without it
# (the shim then builds without Gloo, goclip with Go's JPEG decoder), and succeeds.
# Everything else (libtorch, CUDA headers, NCCL, the Python peers) comes from the venv
# (third_party/venv.sh).
#
#   third_party/apt.sh [--test]
set -euo pipefail
test=false
[ "${1:-}" = --test ] && test=true
installed() { dpkg -s "$1" >/dev/null 2>&1; }
need=()
installed libgloo-dev || need+=(libgloo-dev)
if ! installed libjpeg62-turbo-dev && ! installed libjpeg-turbo8-dev; then
  id=$(. /etc/os-release 2>/dev/null && echo "${ID:-}")
  case "$id" in
    ubuntu) need+=(libjpeg-turbo8-dev) ;;
    debian) need+=(libjpeg62-turbo-dev) ;;
    *) need+=(libjpeg-dev) ;; # the name both distributions resolve to their libjpeg-turbo
  esac
fi
$test && ! installed python3-pil && need+=(python3-pil)
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
  echo "apt: missing ${need[*]} (sudo apt-get install ${need[*]}); without them the shim builds without Gloo (goclip launch / data-parallel training on the CPU will say so), goclip decodes JPEGs with Go's slower image/jpeg, and the test against Debian's PIL is skipped" >&2
  exit 0
fi
echo "apt: installing ${need[*]}" >&2
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
