#!/usr/bin/env bash
# Builds goclip's libtorch shim, libgoclip_torch.so, into OUT/lib (default build/shim/lib,
# where the Go package's rpath looks).
#
#   scripts/build-shim.sh [--out DIR] [--method auto|cmake|gxx] [--jobs N]
#
# Methods:
#   cmake  torch/csrc/CMakeLists.txt with the prefix third_party/find-libtorch.sh prints.
#   gxx    plain g++ against a libtorch's include and lib folders: for machines without
#          CMake, or where CMake cannot configure Torch (a pip CUDA wheel with no system
#          CUDA toolkit). The CUDA runtime headers come from $CUDA_HOME, /usr/local/cuda or
#          the pip wheels' nvidia/*/include, whichever matches torch's CUDA major version;
#          GOCLIP_WITH_CUDA is defined only when such headers exist (and cuda.cc compiles).
#   auto   (default) gxx for a Python torch (the venv's or $PYTHON's: Torch's CMake config
#          wants a full CUDA toolkit there); for LIBTORCH or Debian's, cmake when it is
#          installed and gives a complete shim (CUDA on when the libtorch has CUDA), else gxx.
#
# --require-cuda (or GOCLIP_REQUIRE_CUDA_SHIM=1): fail when the libtorch has CUDA but the
# shim could not be built with it (no CUDA headers found, or cuda.cc failed with them),
# instead of building a shim whose CUDA queries report CUDA unavailable.
#
# Which libtorch (libtorch 2.4 or newer; first match wins):
#   GOCLIP_TORCH_INCLUDE + GOCLIP_TORCH_LIB   explicit folders
#   LIBTORCH                                 an unpacked libtorch (include/, lib/)
#   GOCLIP_TORCH=venv (the default)          the torch of the project's venv, build/venv
#                                            (third_party/venv.sh makes it): the pinned
#                                            CUDA wheel, whose nvidia-* wheels carry the
#                                            CUDA headers and NCCL
#   GOCLIP_TORCH=python, or PYTHON set       `import torch` of $PYTHON (default python3):
#                                            the GPU machine, the CUDA Docker image
#   GOCLIP_TORCH=debian                      Debian's libtorch-dev (/usr/include; 2.x only
#                                            from trixie on)
#
# Writes OUT/shim-build.txt (method, torch version, C++ ABI, CUDA headers used). The
# Makefile's shim target, Dockerfile.cuda and scripts/gpu-check.sh all build with this.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out="$root/build/shim"
method="${GOCLIP_SHIM_METHOD:-auto}"
jobs="${JOBS:-$(nproc 2>/dev/null || echo 4)}"
require_cuda="${GOCLIP_REQUIRE_CUDA_SHIM:-0}"
choice="${GOCLIP_TORCH:-}"
if [ -z "$choice" ]; then
  if [ -n "${PYTHON:-}" ]; then choice=python; else choice=venv; fi
fi
case "$choice" in
  venv) python="$root/build/venv/bin/python" ;;
  python) python="${PYTHON:-python3}" ;;
  debian) python="" ;;
  *) echo "build-shim: GOCLIP_TORCH=$choice: want venv, python or debian" >&2; exit 2 ;;
esac

while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --method) method="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --require-cuda) require_cuda=1; shift ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "build-shim: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
src="$root/torch/csrc"
# every .cc of torch/csrc, as CMakeLists.txt's add_library lists them
mapfile -t sources < <(cd "$src" && ls -- *.cc)
log() { echo "build-shim: $*" >&2; }

# py CODE: runs python outside the repository, whose torch/ folder would otherwise shadow
# the real torch package as a namespace package.
py() { (cd / && "$python" -c "$1") 2>/dev/null; }

# ---- locating libtorch for the g++ build ----
torch_inc="" torch_lib="" torch_cuda_major="" abi="" torch_from=""
locate_torch() {
  if [ -n "${GOCLIP_TORCH_INCLUDE:-}" ] && [ -n "${GOCLIP_TORCH_LIB:-}" ]; then
    torch_inc=$GOCLIP_TORCH_INCLUDE torch_lib=$GOCLIP_TORCH_LIB torch_from="GOCLIP_TORCH_INCLUDE/LIB"
  elif [ -n "${LIBTORCH:-}" ]; then
    torch_inc=$LIBTORCH/include torch_lib=$LIBTORCH/lib torch_from="LIBTORCH"
  elif [ "$choice" = debian ]; then
    local multiarch
    multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
    torch_inc=/usr/include torch_lib=/usr/lib/$multiarch torch_from="Debian libtorch-dev"
  else
    if [ "$choice" = venv ] && [ ! -x "$python" ]; then
      log "no project venv at $python: make venv (third_party/venv.sh) makes it, or choose GOCLIP_TORCH=python|debian or LIBTORCH"
      return 1
    fi
    local info
    info=$(py 'import os, torch
d = os.path.dirname(torch.__file__)
print(os.path.join(d, "include"))
print(os.path.join(d, "lib"))
print(int(torch._C._GLIBCXX_USE_CXX11_ABI))
print((torch.version.cuda or "").split(".")[0])' || true)
    if [ -z "$info" ]; then log "$python cannot import torch"; return 1; fi
    { read -r torch_inc; read -r torch_lib; read -r abi; read -r torch_cuda_major; } <<<"$info"
    torch_from="$python (torch $(py 'import torch; print(torch.__version__)'))"
  fi
  if [ ! -f "$torch_inc/torch/csrc/api/include/torch/torch.h" ] && [ ! -f "$torch_inc/torch/torch.h" ]; then
    log "no libtorch headers under $torch_inc (from $torch_from)"; return 1
  fi
  if [ ! -e "$torch_lib/libtorch.so" ] && [ ! -e "$torch_lib/libtorch_cpu.so" ]; then
    log "no libtorch libraries under $torch_lib (from $torch_from)"; return 1
  fi
  if [ -z "$abi" ]; then # read the C++ ABI off libc10's symbols
    local n # (grep -c reads everything: grep -q would end nm early, failing the pipe)
    n=$(nm -D --defined-only "$torch_lib/libc10.so" 2>/dev/null | grep -c 'B5cxx11' || true)
    if [ "${n:-0}" -gt 0 ]; then abi=1; else abi=0; fi
  fi
  if [ -z "$torch_cuda_major" ] && [ -e "$torch_lib/libtorch_cuda.so" ]; then
    torch_cuda_major=$(readelf -d "$torch_lib/libtorch_cuda.so" 2>/dev/null |
      sed -n 's/.*libcudart\.so\.\([0-9]*\).*/\1/p' | head -1 || true)
  fi
}

# torch_version_of INCLUDE: "MAJOR MINOR" of the libtorch headers in INCLUDE. Since torch
# 2.10 the numbers live in torch/headeronly/version.h (torch/csrc/api/include/torch/
# version.h only includes it); older releases define them in the latter.
torch_version_of() {
  local h major minor
  for h in "$1/torch/headeronly/version.h" "$1/torch/csrc/api/include/torch/version.h"; do
    [ -f "$h" ] || continue
    major=$(sed -n 's/^#define TORCH_VERSION_MAJOR \([0-9]*\).*/\1/p' "$h")
    minor=$(sed -n 's/^#define TORCH_VERSION_MINOR \([0-9]*\).*/\1/p' "$h")
    if [ -n "$major" ] && [ -n "$minor" ]; then echo "$major $minor"; return; fi
  done
  echo "0 0"
}

# cuda_major_of DIR: the CUDA runtime major version of the headers in DIR, or nothing.
cuda_major_of() {
  local h="$1/cuda_runtime_api.h" v
  [ -f "$h" ] || return 0
  v=$(sed -n 's/^#define CUDART_VERSION *\([0-9]*\).*/\1/p' "$h" | head -1 || true)
  [ -n "$v" ] && echo $((v / 1000))
}

# CUDA include folders matching torch's CUDA major version: a toolkit's include/ (with
# its cccl/), or every include/ of the pip wheels (nvidia/cu13/include, or
# nvidia/cuda_runtime/include, nvidia/cublas/include, ... for CUDA 12).
cuda_incs=() cuda_from=""
locate_cuda_headers() {
  [ -n "$torch_cuda_major" ] || return 0
  local d
  local nvcc_root=""
  if command -v nvcc >/dev/null 2>&1; then nvcc_root=$(cd "$(dirname "$(command -v nvcc)")/.." && pwd); fi
  for d in "${CUDA_HOME:-}" "${CUDA_PATH:-}" "$nvcc_root" /usr/local/cuda; do
    if [ -z "$d" ] || [ ! -f "$d/include/cuda_runtime_api.h" ]; then continue; fi
    if [ "$(cuda_major_of "$d/include")" = "$torch_cuda_major" ]; then
      cuda_incs=("$d/include"); cuda_from="$d"
      [ -d "$d/include/cccl" ] && cuda_incs+=("$d/include/cccl")
      return 0
    fi
    log "skipping $d/include: CUDA $(cuda_major_of "$d/include"), torch was built with CUDA $torch_cuda_major"
  done
  local roots
  roots=$(py 'import nvidia; print("\n".join(nvidia.__path__))' || true)
  [ -n "$roots" ] || return 0
  local r rt_major=""
  while read -r r; do
    [ -d "$r" ] || continue
    while read -r d; do
      cuda_incs+=("$d")
      [ -d "$d/cccl" ] && cuda_incs+=("$d/cccl")
      [ -f "$d/cuda_runtime_api.h" ] && rt_major=$(cuda_major_of "$d")
    done < <(find "$r" -mindepth 2 -maxdepth 2 -type d -name include | sort)
  done <<<"$roots"
  if [ "$rt_major" != "$torch_cuda_major" ]; then
    [ ${#cuda_incs[@]} -gt 0 ] && log "pip CUDA headers: runtime major '${rt_major:-none}', torch wants $torch_cuda_major; not using them"
    cuda_incs=(); return 0
  fi
  cuda_from="pip wheels under ${roots%%$'\n'*}"
}

# nvidia_includes: every include/ folder of the pip nvidia-* wheels.
nvidia_includes() {
  local roots r
  roots=$(py 'import nvidia; print("\n".join(nvidia.__path__))' || true)
  [ -n "$roots" ] || return 0
  while read -r r; do
    [ -d "$r" ] && find "$r" -mindepth 2 -maxdepth 2 -type d -name include
  done <<<"$roots" | sort
}

build_gxx() {
  locate_torch || return 1
  locate_cuda_headers
  local major minor std
  read -r major minor < <(torch_version_of "$torch_inc")
  if [ "$major" -lt 2 ] || { [ "$major" -eq 2 ] && [ "$minor" -lt 4 ]; }; then
    log "libtorch $major.$minor from $torch_from: goclip needs libtorch 2.4 or newer"; return 1
  fi
  # ATen needs C++20 from 2.12 on (2.13 enforces it); older releases build as C++17.
  if [ "$major" -gt 2 ] || { [ "$major" -eq 2 ] && [ "$minor" -ge 12 ]; }; then std=c++20; else std=c++17; fi
  local cuda_libs=()
  if [ -e "$torch_lib/libtorch_cuda.so" ]; then cuda_libs=(-ltorch_cuda); fi
  if [ -e "$torch_lib/libc10_cuda.so" ]; then cuda_libs+=(-lc10_cuda); fi
  # Optional features, as CMakeLists.txt decides them: CUDA queries with the CUDA headers;
  # c10d NCCL where this libtorch has CUDA and nccl.h is found (Gloo: distributed.cc
  # detects gloo/ on the include path itself).
  local features=() nccl_inc="" d
  if [ ${#cuda_libs[@]} -gt 0 ] && [ ${#cuda_incs[@]} -gt 0 ]; then
    features=(-DGOCLIP_WITH_CUDA=1)
    for d in "${NCCL_INCLUDE_DIR:-}" "$torch_inc" "${cuda_incs[@]}" $(nvidia_includes); do
      if [ -n "$d" ] && [ -f "$d/nccl.h" ]; then nccl_inc=$d; break; fi
    done
    if [ -n "$nccl_inc" ]; then features+=(-DGOCLIP_WITH_NCCL=1); fi
  fi
  log "g++ build: torch $major.$minor from $torch_from, -std=$std, _GLIBCXX_USE_CXX11_ABI=$abi, CUDA libs: ${cuda_libs[*]:-none}, CUDA headers: ${cuda_from:-none}, NCCL: ${nccl_inc:-no}"

  local obj="$out/obj" incs=(-I"$src")
  rm -rf "$obj"; mkdir -p "$obj" "$out/lib"
  for d in "$torch_inc" "$torch_inc/torch/csrc/api/include"; do
    [ "$d" = /usr/include ] || incs+=(-isystem "$d") # never demote the system folder
  done
  for d in "${cuda_incs[@]}"; do incs+=(-isystem "$d"); done
  if [ -n "$nccl_inc" ]; then incs+=(-isystem "$nccl_inc"); fi
  local flags=(-O2 -fPIC -pthread -DNDEBUG -D_GLIBCXX_USE_CXX11_ABI="$abi"
    -Wall -Wno-unused-function -Wno-unused-variable -Wno-deprecated-declarations)

  compile() { # compile FILE DEFINES...: one object; FILE.ok marks success, FILE.log the output
    local f=$1 b=$obj/${1%.cc}; shift
    rm -f "$b.ok"
    g++ -std="$std" "${flags[@]}" "$@" "${incs[@]}" -c "$src/$f" -o "$b.o" >"$b.log" 2>&1 && touch "$b.ok"
  }
  compile_all() { # every source not yet compiled, at most $jobs at once
    local f running=0
    for f in "${sources[@]}"; do
      [ -f "$obj/${f%.cc}.ok" ] && continue
      compile "$f" "${features[@]}" &
      running=$((running + 1))
      if [ "$running" -ge "$jobs" ]; then wait -n || true; running=$((running - 1)); fi
    done
    wait || true
  }
  failed() { local f; for f in "${sources[@]}"; do [ -f "$obj/${f%.cc}.ok" ] || echo "$f"; done; }

  compile_all
  if [ -n "$(failed)" ] && grep -qs 'or later compatible compiler is required' "$obj"/*.log; then
    if [ "$std" = c++20 ]; then std=c++17; else std=c++20; fi
    log "these headers want another C++ standard; retrying with -std=$std"
    rm -f "$obj"/*.ok
    compile_all
  fi
  # A file that fails only with the optional features (CUDA headers, NCCL) is built
  # without them, as a CPU-only libtorch would build it: CUDA queries and NCCL then
  # report themselves unavailable at run time.
  local f dropped=""
  if [ -n "$(failed)" ] && [ ${#features[@]} -gt 0 ]; then
    for f in $(failed); do
      log "$f did not compile with ${features[*]}; first errors:"
      grep -m 8 'error' "$obj/${f%.cc}.log" >&2 || true
      compile "$f" || true
      if [ -f "$obj/${f%.cc}.ok" ]; then dropped+=" $f"; log "$f built without the optional features"; fi
    done
  fi
  if [ -n "$(failed)" ]; then
    for f in $(failed); do log "$f failed:"; sed -n '1,30p' "$obj/${f%.cc}.log" >&2; done
    return 1
  fi

  local objs=()
  for f in "${sources[@]}"; do objs+=("$obj/${f%.cc}.o"); done
  # --no-as-needed keeps libtorch_cuda, whose loading registers the CUDA kernels, although
  # no symbol of it is named; the rpath lets the shim find libtorch without LD_LIBRARY_PATH.
  g++ -shared -o "$out/lib/libgoclip_torch.so.tmp" "${objs[@]}" -pthread \
    -L"$torch_lib" -Wl,-rpath,"$torch_lib" -Wl,--no-as-needed \
    -ltorch "${cuda_libs[@]}" -ltorch_cpu -lc10 -Wl,--as-needed
  mv -f "$out/lib/libgoclip_torch.so.tmp" "$out/lib/libgoclip_torch.so"
  cat >"$out/shim-build.txt" <<EOF
method: gxx
torch: $major.$minor from $torch_from
include: $torch_inc
lib: $torch_lib
std: $std
cxx11_abi: $abi
torch_cuda_major: ${torch_cuda_major:-none}
cuda_headers: ${cuda_from:-none}
features: ${features[*]:-none}
built_without_features:${dropped:- none}
goclip_with_cuda: $(if [ ${#features[@]} -gt 0 ] && [[ " $dropped " != *" cuda.cc "* ]]; then echo 1; else echo 0; fi)
EOF
}

build_cmake() {
  command -v cmake >/dev/null 2>&1 || { log "cmake is not installed"; return 1; }
  local prefix
  prefix=$(cd / && "$root/third_party/find-libtorch.sh") || return 1
  log "cmake build: Torch prefix $prefix"
  cmake -S "$src" -B "$out" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release >"$out.cmake.log" 2>&1 || {
    log "cmake could not configure (last lines of $out.cmake.log):"; tail -n 15 "$out.cmake.log" >&2; return 1; }
  cmake --build "$out" -j "$jobs" >>"$out.cmake.log" 2>&1 || {
    log "cmake build failed (last lines of $out.cmake.log):"; tail -n 30 "$out.cmake.log" >&2; return 1; }
  # A libtorch with CUDA must give a shim with CUDA: linked to libtorch_cuda, and cuda.cc
  # compiled with GOCLIP_WITH_CUDA (Torch's CMake config drops CUDA when it finds no toolkit).
  local lib="" with_cuda=0 d
  for d in "$prefix/../../lib" "$prefix/../.." "$prefix/../../../lib"; do
    if [ -e "$d/libtorch_cpu.so" ]; then lib=$(cd "$d" && pwd); break; fi
  done
  if grep -rqs 'GOCLIP_WITH_CUDA' "$out/CMakeFiles/goclip_torch.dir/flags.make"; then with_cuda=1; fi
  if [ -n "$lib" ] && [ -e "$lib/libtorch_cuda.so" ] &&
     { [ "$with_cuda" = 0 ] || ! readelf -d "$out/lib/libgoclip_torch.so" | grep -q libtorch_cuda; }; then
    log "cmake gave a shim without CUDA although $lib has libtorch_cuda.so"; return 1
  fi
  printf 'method: cmake\nprefix: %s\nlib: %s\ngoclip_with_cuda: %s\n' "$prefix" "${lib:-unknown}" "$with_cuda" >"$out/shim-build.txt"
}

mkdir -p "$out"
case "$method" in
  cmake) build_cmake ;;
  gxx) build_gxx ;;
  auto)
    if [ -z "${LIBTORCH:-}" ] && [ "$choice" != debian ]; then
      build_gxx
    elif command -v cmake >/dev/null 2>&1 && build_cmake; then :; else
      log "falling back to the g++ build"
      build_gxx
    fi ;;
  *) log "unknown method $method (want auto, cmake or gxx)"; exit 2 ;;
esac
if [ "$require_cuda" = 1 ] && ! grep -q '^torch_cuda_major: none' "$out/shim-build.txt" &&
   ! grep -q '^goclip_with_cuda: 1' "$out/shim-build.txt"; then
  log "--require-cuda: this libtorch has CUDA but the shim was built without it (shim-build.txt below)"
  cat "$out/shim-build.txt" >&2
  rm -f "$out/lib/libgoclip_torch.so" # so that make does not take it as up to date
  exit 1
fi
log "built $out/lib/libgoclip_torch.so"
cat "$out/shim-build.txt" >&2
