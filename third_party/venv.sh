#!/usr/bin/env bash
# Makes the project's Python environment, build/venv, from third_party/requirements.txt:
# the torch whose libtorch the shim is built against by default, and the libraries the
# interop tests, benchmarks and GPU check compare goclip with (transformers, peft,
# open_clip, tensorboard, webdataset).
#
#   third_party/venv.sh [--force]     (make venv; make build and make test call it)
#
# It does nothing when build/venv exists and was made from the current requirements.txt
# (a hash of the file is kept in build/venv/goclip-requirements.sha256); otherwise it
# makes the environment anew. Wheels are downloaded into a wheelhouse that outlives the
# venv and `make clean` (GOCLIP_WHEELHOUSE, default ~/.cache/goclip/wheels: about 3 GB,
# torch's CUDA wheel and its nvidia-* wheels), then installed from there with no index,
# so a second install needs no network. pip's own HTTP cache is not relied on: the
# registry here marks its responses uncacheable.
#
# Environment: PYTHON (the interpreter the venv is made from, default python3; 3.10 or
# newer), GOCLIP_WHEELHOUSE, VENV (default build/venv).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${VENV:-$root/build/venv}
req=$root/third_party/requirements.txt
wheels=${GOCLIP_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/goclip/wheels}
python=${PYTHON:-python3}
stamp=$venv/goclip-requirements.sha256
log() { echo "venv: $*" >&2; }

want=$(sha256sum "$req" | cut -d' ' -f1)
if [ "${1:-}" != --force ] && [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi

command -v "$python" >/dev/null 2>&1 || { log "no $python on PATH (install Python 3.10 or newer, or set PYTHON)"; exit 1; }
"$python" -c 'import sys, venv; sys.exit(sys.version_info < (3, 10))' 2>/dev/null || {
  log "$python is older than 3.10 or lacks the venv module (Debian: apt-get install python3-venv)"; exit 1; }

start=$(date +%s)
log "making $venv from third_party/requirements.txt with $("$python" --version 2>&1)"
log "downloading wheels into $wheels (first time: about 3 GB, torch's CUDA build; later: nothing)"
# The stamp is written last: an interrupted install leaves none, and the next run starts over.
rm -rf "$venv"
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
mkdir -p "$wheels"
# One line per wheel as it arrives (torch is 530 MB; the nvidia-* wheels up to 700 MB).
"${pip[@]}" download --progress-bar off -d "$wheels" -r "$req" 2>&1 |
  sed -un "s/^ *Downloading /  downloading /p" >&2
log "downloaded in $(($(date +%s) - start))s; installing"
"${pip[@]}" install --progress-bar off --no-index --find-links "$wheels" -r "$req" 2>&1 |
  sed -un -e 's/^Successfully installed \(.*\)/\1/p' -e '/ERROR/p' |
  awk '/ERROR/ {print; next} {print "venv: installed " NF " packages"}' >&2
# The install must have given every pinned package, whatever pip printed.
"$venv/bin/python" - "$req" <<'PY'
import sys
from importlib import metadata
bad = []
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, _, version = line.partition("==")
    try:
        got = metadata.version(name)
    except metadata.PackageNotFoundError:
        got = None
    if got != version:
        bad.append(f"{name}: want {version}, have {got}")
if bad:
    sys.exit("venv: " + "; ".join(bad))
PY
echo "$want" >"$stamp"
log "ready in $(($(date +%s) - start))s: $venv ($(du -sh "$venv" | cut -f1); wheelhouse $(du -sh "$wheels" | cut -f1))"
