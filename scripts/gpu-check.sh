#!/usr/bin/env bash
# The GPU check, in one call on the GPU machine (CUDA PyTorch, transformers and peft; no
# Go, no network). Prepare on a machine with Go first: scripts/gpu-prepare.sh packs
# bin/goclip, the test binaries, the fixtures and a copy of the CUDA runtime headers into
# build/gpu-bundle/ to carry (docs/gpu.md gives the device call).
#
#   bash scripts/gpu-check.sh                        (from the repository root)
#   GPU_CHECK_ONLY="bench-peer interop" bash scripts/gpu-check.sh     (a rerun)
#
# ---- The plan: the steps in this order, each with its own limit (seconds) ----
# A step runs under `timeout` with its limit, or with what is left of the budget when
# that is less; one that would start with under 15 s left is recorded as skipped. A
# failure is recorded and the next step runs, except for the gate: when the shim cannot
# be built with CUDA, or `goclip version --json` says CUDA is not built in or not
# available, the check stops at once and writes its report (every later step would only
# test a CPU shim). Estimates (issue 15): shim 80, CUDA tests 30, peer bench 45, goclip
# benches 20-40 each, interop 100-160, e2e 60-120 (with its --device-input=false run):
# the first seven fit 440 s with room left; e2e and the other packages' tests run while
# time lasts.
PLAN=(
  "shim                150"  # scripts/build-shim.sh --method gxx --require-cuda (gate)
  "version              20"  # bin/goclip version --json: CUDA built in and available (gate)
  "test-torch_cudatest  90"  # torch/cudatest, GOCLIP_REQUIRE_CUDA=1 (skips fail), TF32 off
  "bench-peer          100"  # bench/peer/gpu_hf_peft.py: bf16 matmul rate, LoRA and full
  "bench-goclip-lora    75"  # goclip bench: LoRA r=64 q/k/v, vit-b-16, batch 256, bf16
  "bench-goclip-full    75"  # goclip bench: full training, seed-scratch, batch 256, bf16
  "interop             200"  # scripts/gpu/interop.py --device cuda: goclip vs transformers/peft
  "e2e                 150"  # scripts/gpu/e2e.sh: goclip finetune on cached synthetic 224 px
  "bench-goclip-lora-fp32-base 60"  # the LoRA bench with --bf16-base=false (autocast casts)
  "tests                90"  # each other package's test binary (test-NAME), while time lasts
)
#
# Environment:
#   PYTHON            the machine's python with CUDA torch, transformers, peft (python3)
#   OUT               where the results go (default build/gpu-out): gpu-report.md,
#                     gpu-report.json, gpu-steps.tsv, gpu-logs.tar.gz (logs, JSON, TSV only;
#                     at most 15 MiB); nothing else is written there
#   GPU_CHECK_BUDGET  seconds for all the steps (default 440; the call gets ~480)
#   GPU_CHECK_ONLY    run only these steps (names as above or in the report: a test-NAME,
#                     "tests" for all of them; "failed" = every step that was not ok in
#                     the previous call on this machine). The work folder is kept, so the
#                     report merges the earlier call's results; the shim is reused when
#                     the earlier call built it with CUDA (else rebuilt first)
#   GPU_CHECK_SKIP    steps to leave out
#   GPU_CHECK_STEPS   timed steps of the benchmarks (default 30, after 10 warm-up steps)
#   GPU_CHECK_WORK    the work folder (default /tmp/goclip-gpu-check)
# shellcheck disable=SC2016 # the bash -c scripts below read their arguments as $1, $2
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1
OUT=${OUT:-$root/build/gpu-out}
PY=$(command -v "${PYTHON:-python3}" || echo "${PYTHON:-python3}")
budget=${GPU_CHECK_BUDGET:-440}
nsteps=${GPU_CHECK_STEPS:-30}
only=" ${GPU_CHECK_ONLY:-} "
skip=" ${GPU_CHECK_SKIP:-} "
work=${GPU_CHECK_WORK:-/tmp/goclip-gpu-check}
start=$(date +%s)
mkdir -p "$OUT"
elapsed() { echo $(($(date +%s) - start)); }

# ---- the work folder: fresh, or (GPU_CHECK_ONLY) the previous call's, kept ----
if [ -n "${GPU_CHECK_ONLY:-}" ] && [ -f "$work/steps.tsv" ]; then
  if [[ $only == *" failed "* ]]; then
    only+=" $(awk -F'\t' '$2 != "ok" {printf "%s ", $1}' "$work/steps.tsv") "
    echo "GPU_CHECK_ONLY=failed: rerunning$only"
  fi
  # the previous call's rows (its own and those it merged), kept in the report for the
  # steps not rerun now
  cp "$work/steps.tsv" "$work/steps-prev.tsv"
else
  [[ $only == *" failed "* ]] && echo "GPU_CHECK_ONLY=failed: no previous call's steps.tsv in $work: running everything"
  [[ $only == *" failed "* ]] && only="  "
  rm -rf "$work"
fi
mkdir -p "$work/logs"
: >"$work/steps.tsv"

# wanted NAME: whether this call runs step NAME (GPU_CHECK_ONLY, GPU_CHECK_SKIP)
wanted() {
  [[ $skip == *" $1 "* ]] && return 1
  [ -z "${only// /}" ] && return 0
  [[ $only == *" $1 "* ]] && return 0
  [[ $1 == test-* && $1 != test-torch_cudatest && $only == *" tests "* ]]
}

# step NAME LIMIT CMD...: runs CMD with a limit of LIMIT seconds (less when the budget is
# nearly spent), its output in $work/logs/NAME.log; records status, exit code, seconds.
step() {
  local name=$1 limit=$2 rc t0 dt status left
  shift 2
  left=$((budget - $(elapsed)))
  if [ "$left" -lt 15 ]; then
    printf '%s\tskipped\t-\t0\tout of time (budget %ss)\n' "$name" "$budget" >>"$work/steps.tsv"
    echo "=== $name: skipped, out of time"; return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "=== [$(elapsed)s] $name (limit ${limit}s)"
  t0=$(date +%s)
  timeout -k 5 "$limit" "$@" >"$work/logs/$name.log" 2>&1 </dev/null
  rc=$?
  dt=$(($(date +%s) - t0))
  case $rc in
    0) status=ok ;;
    124|137) status=timeout ;;
    *) status=fail ;;
  esac
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$dt" "" >>"$work/steps.tsv"
  echo "--- $name: $status (rc $rc, ${dt}s)"
  if [ "$status" != ok ]; then tail -n 12 "$work/logs/$name.log" | cut -c1-300; fi
  return "$rc"
}
note() { printf '%s\t%s\t-\t0\t%s\n' "$1" "$2" "$3" >>"$work/steps.tsv"; }

# pack_logs: $OUT/gpu-logs.tar.gz of the work folder's logs, JSON, JSONL, TSV, text and
# markdown only (never models, checkpoints, adapters, images, .npy, tokenizer files),
# at most 15 MiB: over that, the biggest files are cut to their last 2,000 lines.
pack_logs() {
  local list=$work/tar-files.lst tarball=$OUT/gpu-logs.tar.gz max=$((15 * 1024 * 1024)) size big i
  (cd "$work" && find . \( -name models -o -name merged -o -name adapters -o -name 'synth*' \
      -o -name 'images_*' -o -name model -o -name checkpoints -o -name adapter \) -prune -o -type f \
      \( -name '*.log' -o -name '*.json' -o -name '*.jsonl' -o -name '*.tsv' -o -name '*.txt' -o -name '*.md' \) \
      ! -name vocab.json ! -name merges.txt ! -name tar-files.lst -print | sort) >"$list"
  for i in 1 2 3 4 5 6 7 8 9 10; do
    tar -czf "$tarball" -C "$work" -T "$list" 2>/dev/null
    size=$(stat -c %s "$tarball" 2>/dev/null || echo 0)
    [ "$size" -le "$max" ] && break
    big=$(cd "$work" && tr '\n' '\0' <"$list" | xargs -0 ls -S 2>/dev/null | head -1)
    echo "gpu-logs.tar.gz is $((size / 1048576)) MiB: cutting $big to its last 2000 lines"
    { echo "[gpu-check: cut to the last 2000 lines to fit gpu-logs.tar.gz]"; tail -n 2000 "$work/$big" | cut -c1-2000; } \
      >"$work/$big.cut" && mv -f "$work/$big.cut" "$work/$big"
  done
  if [ "$size" -gt "$max" ]; then # still too big: the reports and the logs' tails only
    (cd "$work" && grep -E '\.(json|tsv|md)$' "$list" | head -200) >"$list.small"
    tar -czf "$tarball" -C "$work" -T "$list.small" 2>/dev/null
  fi
  echo "gpu-logs.tar.gz: $(($(stat -c %s "$tarball" 2>/dev/null || echo 0) / 1024)) KiB, $(wc -l <"$list") files"
}

# finish: the report (also printed, so that the reply's output tail shows it), the
# steps, the logs; then exit with 0 when every step was ok.
finish() {
  echo "=== [$(elapsed)s] report"
  if [ -s "$work/steps-prev.tsv" ]; then # the earlier call's results for the steps not rerun
    awk -F'\t' -v OFS='\t' 'NR == FNR {now[$1] = 1; next}
      !($1 in now) && !seen[$1]++ {if ($5 !~ /previous call/) $5 = ($5 == "" ? "" : $5 "; ") "previous call"; print}' \
      "$work/steps.tsv" "$work/steps-prev.tsv" >"$work/steps-merged.tsv"
    cat "$work/steps-merged.tsv" >>"$work/steps.tsv"
  fi
  cp "$work/steps.tsv" "$OUT/gpu-steps.tsv"
  if ! timeout 60 "$PY" scripts/gpu/report.py --work "$work" --out "$OUT" --elapsed "$(elapsed)"; then
    echo "report.py failed; raw step results:"
    cat "$work/steps.tsv"
  fi
  pack_logs
  local n
  n=$(find "$OUT" -type f | wc -l)
  [ "$n" -le 8 ] || echo "warning: $OUT holds $n files; the device tool returns at most 8"
  ls -la "$OUT"
  echo "gpu-check: done in $(elapsed)s"
  if awk -F'\t' '$2 != "ok" {bad = 1} END {exit bad}' "$work/steps.tsv"; then exit 0; fi
  exit 1
}

# ---- what was carried ----
bundle=build/gpu-bundle/bundle.tar.xz
if [ -f "$bundle" ]; then
  echo "unpacking $bundle ($(cat build/gpu-bundle/commit 2>/dev/null || echo 'commit unknown'))"
  tar -xJf "$bundle" || echo "could not unpack $bundle"
fi
[ -x bin/goclip ] || echo "bin/goclip missing: run scripts/gpu-prepare.sh and carry build/gpu-bundle"
if [ -d build/gpu-fixtures/clip-tiny-openai ]; then
  export GOCLIP_FIXTURES=$root/build/gpu-fixtures
fi

# ---- the machine ----
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv,noheader \
  >"$work/nvidia-smi.txt" 2>"$work/logs/nvidia-smi-query.log" || echo "nvidia-smi failed"
nvidia-smi >"$work/logs/nvidia-smi.log" 2>&1 || true
(cd /tmp && "$PY" -c 'import json, sys; sys.path.insert(0, sys.argv[1]); import common; print(json.dumps(common.versions()))' \
  "$root/scripts/gpu") >"$work/env.json" 2>"$work/logs/env.log" || true
echo "machine: $(head -1 "$work/nvidia-smi.txt"); $(cat "$work/env.json")"

# Offline: nothing may try the Hub. The test binaries' python (internal/testutil) is this
# one. The shim finds libtorch through its rpath, the binaries the shim through
# LD_LIBRARY_PATH; torch/lib and the nvidia-* wheels' lib folders are a safety net.
export PYTHONUNBUFFERED=1 GOCLIP_REQUIRE_CUDA=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export GOCLIP_TORCH_PYTHON=$PY PYTHON=$PY PY
libs=$(cd /tmp && "$PY" -c 'import glob, os, torch
dirs = [os.path.join(os.path.dirname(torch.__file__), "lib")]
try:
    import nvidia
    for p in nvidia.__path__:
        dirs += sorted(glob.glob(os.path.join(p, "*", "lib")))
except ImportError:
    pass
print(":".join(d for d in dirs if os.path.isdir(d)))' 2>/dev/null)
export LD_LIBRARY_PATH=$root/build/shim/lib${libs:+:$libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

# has_cuda_headers: whether this machine holds CUDA runtime headers, crt/ included, of
# torch's CUDA major version where scripts/build-shim.sh looks (CUDA 13 moved crt/ into a
# package of its own, which a machine's wheels may lack). Without them the shim is built
# against the copy gpu-prepare.sh carried (build/gpu-cuda, from the preparing venv).
has_cuda_headers() {
  (cd /tmp && "$PY" - "${CUDA_HOME:-}" "${CUDA_PATH:-}" "$(command -v nvcc 2>/dev/null)" <<'EOF'
import glob, os, re, sys
import torch
want = (torch.version.cuda or "").split(".")[0]
cands = [os.path.join(d, "include") for d in sys.argv[1:3] + ["/usr/local/cuda"] if d]
if sys.argv[3]:
    cands.append(os.path.join(os.path.dirname(os.path.dirname(sys.argv[3])), "include"))
try:
    import nvidia
    pip = [d for p in nvidia.__path__ for d in glob.glob(os.path.join(p, "*", "include"))]
except ImportError:
    pip = []
def major(d):
    try:
        m = re.search(r"#define CUDART_VERSION\s+(\d+)", open(os.path.join(d, "cuda_runtime_api.h")).read())
        return str(int(m.group(1)) // 1000) if m else None
    except OSError:
        return None
for d in cands:
    if major(d) == want:
        sys.exit(0 if os.path.exists(os.path.join(d, "crt", "host_defines.h")) else 1)
rt = [d for d in pip if major(d) == want]
sys.exit(0 if rt and any(os.path.exists(os.path.join(d, "crt", "host_defines.h")) for d in pip) else 1)
EOF
  )
}

build_shim() { # build_shim [CUDA_HOME]
  if [ -n "${1:-}" ]; then export CUDA_HOME=$1; fi
  GOCLIP_TORCH=python PYTHON=$PY scripts/build-shim.sh --method gxx --require-cuda --out build/shim
}
export -f build_shim

# run_test NAME LIMIT: one test binary from the manifest, in its package folder
run_test() {
  local bin=$1 dir
  dir=$(awk -F'\t' -v b="$bin" '$1 == b {print $2}' build/tests/manifest.tsv)
  if [ -z "$dir" ] || [ ! -d "$dir" ]; then echo "no package folder for $bin"; return 2; fi
  cd "$dir" && "$root/build/tests/$bin" -test.v -test.count=1 -test.timeout "${2:-170}s"
}
export -f run_test
export root

# ---- the steps, in the order of PLAN ----
do_shim() {
  local limit=$1 fallback=""
  if ! wanted shim && [ -f build/shim/lib/libgoclip_torch.so ] &&
     grep -qs '^goclip_with_cuda: 1' build/shim/shim-build.txt; then
    note shim ok "reused the earlier call's shim"
  else
    [ -f build/gpu-cuda/include/cuda_runtime_api.h ] && fallback=$root/build/gpu-cuda
    if [ -n "$fallback" ] && ! has_cuda_headers; then
      echo "no complete CUDA headers (crt/) of torch's CUDA version here: building against the carried $fallback"
      step shim "$limit" bash -c 'build_shim "$1"' _ "$fallback"
    elif ! step shim "$limit" bash -c 'build_shim'; then
      if [ -n "$fallback" ]; then
        echo "retrying the shim against the carried CUDA headers, $fallback"
        step shim-carried-headers "$limit" bash -c 'build_shim "$1"' _ "$fallback"
      fi
    fi
  fi
  cp build/shim/shim-build.txt "$work/" 2>/dev/null
  if [ ! -f build/shim/lib/libgoclip_torch.so ]; then
    echo "gpu-check: no shim with CUDA (logs/shim*.log): stopping, nothing else would test the GPU"
    note gate fail "stopped: the shim could not be built with CUDA"
    finish
  fi
}

do_version() {
  step version "$1" bash -c 'bin/goclip version --json > "$1"' _ "$work/version.json"
  cat "$work/version.json" 2>/dev/null
  if ! grep -qs '"built_with_cuda":true' "$work/version.json" ||
     ! grep -qs '"cuda_available":true' "$work/version.json"; then
    echo "gpu-check: goclip version says CUDA is not built in or not available: stopping"
    note gate fail "stopped: goclip sees no CUDA ($(tr -d '\n' <"$work/version.json" 2>/dev/null | cut -c1-200))"
    finish
  fi
}

run_plan_step() { # NAME LIMIT
  local name=$1 limit=$2 bin
  case $name in
    shim) do_shim "$limit"; return ;;
    version) do_version "$limit"; return ;;
    tests)
      while IFS=$'\t' read -r bin _; do
        [ "$bin" = torch_cudatest.test ] && continue
        wanted "test-${bin%.test}" || continue
        step "test-${bin%.test}" "$limit" bash -c 'run_test "$1" "$2"' _ "$bin" $((limit - 10))
      done < <(cat build/tests/manifest.tsv 2>/dev/null)
      return ;;
  esac
  wanted "$name" || return 0
  case $name in
    test-torch_cudatest)
      step "$name" "$limit" env NVIDIA_TF32_OVERRIDE=0 bash -c 'run_test torch_cudatest.test "$1"' _ $((limit - 10)) ;;
    bench-peer)
      step "$name" "$limit" "$PY" bench/peer/gpu_hf_peft.py --mode both --batch-size 256 \
        --steps "$nsteps" --warmup 10 --precision bf16 --matmul-n 8192 --out "$work/bench-peer.json" ;;
    bench-goclip-lora)
      step "$name" "$limit" bash -c 'bin/goclip bench --config vit-b-16 --lora-r 64 --lora-alpha 128 \
        --lora-targets q_proj,k_proj,v_proj --batch-size 256 --steps "$1" --warmup 10 --precision bf16 \
        --device cuda --json > "$2"' _ "$nsteps" "$work/bench-goclip-lora.json" ;;
    bench-goclip-full)
      step "$name" "$limit" bash -c 'bin/goclip bench --config seed-scratch --batch-size 256 \
        --steps "$1" --warmup 10 --precision bf16 --device cuda --json > "$2"' _ "$nsteps" "$work/bench-goclip-full.json" ;;
    bench-goclip-lora-fp32-base)
      step "$name" "$limit" bash -c 'bin/goclip bench --config vit-b-16 --lora-r 64 --lora-alpha 128 \
        --lora-targets q_proj,k_proj,v_proj --batch-size 256 --steps "$1" --warmup 10 --precision bf16 \
        --device cuda --json --bf16-base=false > "$2"' _ "$nsteps" "$work/bench-goclip-lora-fp32-base.json" ;;
    interop)
      step "$name" "$limit" env NVIDIA_TF32_OVERRIDE=0 "$PY" scripts/gpu/interop.py --device cuda \
        --models small,vit-b-16 --work "$work" --goclip bin/goclip --fixtures build/gpu-fixtures \
        --out "$work/interop.json" ;;
    e2e)
      step "$name" "$limit" bash scripts/gpu/e2e.sh "$work" $((nsteps + 10)) ;;
    *) echo "gpu-check: no step $name in PLAN" ;;
  esac
}

for entry in "${PLAN[@]}"; do
  # shellcheck disable=SC2086 # "name limit"
  run_plan_step $entry
done
finish
