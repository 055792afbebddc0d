#!/usr/bin/env bash
# The GPU check, in one call on the GPU machine (CUDA PyTorch, transformers and peft; no
# Go, no network). Prepare on a machine with Go first: scripts/gpu-prepare.sh, which packs
# bin/goclip, the test binaries and the fixtures into build/gpu-bundle/ to carry.
#
#   bash scripts/gpu-check.sh           (from the repository root; docs/gpu.md)
#
# Steps, each time-boxed with `timeout`, failures recorded and the next step run:
#   shim       scripts/build-shim.sh against this machine's PyTorch (the Dockerfile's step)
#   version    bin/goclip version --json: libtorch, built with CUDA, devices
#   test-torch_cudatest  torch/cudatest (GOCLIP_REQUIRE_CUDA=1: no skipping here)
#   interop    scripts/gpu/interop.py: goclip vs transformers/peft, fp32, 1e-4
#   bench-*    bench/peer/gpu_hf_peft.py vs `goclip bench`: LoRA r=64 (vit-b-16) and full
#              training (seed-scratch), batch 256, bf16, SDPA, fused AdamW
#   e2e        scripts/gpu/e2e.sh: `goclip finetune` on synthetic 224x224 cached data
#   test-*     the other packages' test binaries, each from its package folder, while the
#              time budget lasts
# Then scripts/gpu/report.py writes $OUT/gpu-report.json and $OUT/gpu-report.md, and the
# logs go to $OUT/gpu-logs.tar.gz.
#
# Environment: OUT (default build/gpu-out), GPU_CHECK_BUDGET (seconds for the steps,
# default 440), PYTHON (default python3), GPU_CHECK_STEPS (bench/e2e steps, default 30),
# GPU_CHECK_SKIP (space-separated step names to skip).
# shellcheck disable=SC2016 # the bash -c scripts below read their arguments as $1, $2
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1
OUT=${OUT:-$root/build/gpu-out}
PY=${PYTHON:-python3}
budget=${GPU_CHECK_BUDGET:-440}
nsteps=${GPU_CHECK_STEPS:-30}
skip=" ${GPU_CHECK_SKIP:-} "
work=${GPU_CHECK_WORK:-/tmp/goclip-gpu-check}
start=$(date +%s)
mkdir -p "$OUT"
rm -rf "$work" && mkdir -p "$work/logs"
: >"$work/steps.tsv"
export PYTHONUNBUFFERED=1 GOCLIP_REQUIRE_CUDA=1

elapsed() { echo $(($(date +%s) - start)); }

# step NAME LIMIT CMD...: runs CMD with a limit of LIMIT seconds (less when the budget is
# nearly spent), its output in $work/logs/NAME.log; records status, exit code, seconds.
step() {
  local name=$1 limit=$2 rc t0 dt status left
  shift 2
  if [[ $skip == *" $name "* ]]; then
    printf '%s\tskipped\t-\t0\tGPU_CHECK_SKIP\n' "$name" >>"$work/steps.tsv"; return 0
  fi
  left=$((budget - $(elapsed)))
  if [ "$left" -lt 15 ]; then
    printf '%s\tskipped\t-\t0\tout of time (budget %ss)\n' "$name" "$budget" >>"$work/steps.tsv"
    echo "=== $name: skipped, out of time"; return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "=== [$(elapsed)s] $name (limit ${limit}s)"
  t0=$(date +%s)
  timeout -k 5 "$limit" "$@" >"$work/logs/$name.log" 2>&1
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

# ---- what was carried ----
bundle=build/gpu-bundle/bundle.tar.xz
if [ -f "$bundle" ]; then
  echo "unpacking $bundle ($(cat build/gpu-bundle/commit 2>/dev/null || echo 'commit unknown'))"
  tar -xJf "$bundle" || echo "could not unpack $bundle"
fi
[ -x bin/goclip ] || echo "bin/goclip missing: run scripts/gpu-prepare.sh and carry build/gpu-bundle"
if [ -d build/gpu-fixtures/clip-tiny-openai ]; then
  export GOCLIP_FIXTURES=$root/build/gpu-fixtures
  # the packages' own tests look in ../shared/fixtures beside the checkout
  parent=$(dirname "$root")
  if [ ! -e "$parent/shared/fixtures" ]; then
    mkdir -p "$parent/shared" && ln -s "$GOCLIP_FIXTURES" "$parent/shared/fixtures"
  fi
fi

# ---- the machine ----
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv,noheader \
  >"$work/nvidia-smi.csv" 2>"$work/logs/nvidia-smi-query.log" || echo "nvidia-smi failed"
nvidia-smi >"$work/logs/nvidia-smi.log" 2>&1 || true
(cd /tmp && "$PY" -c 'import json, sys; sys.path.insert(0, sys.argv[1]); import common; print(json.dumps(common.versions()))' \
  "$root/scripts/gpu") >"$work/env.json" 2>"$work/logs/env.log" || true
echo "machine: $(head -1 "$work/nvidia-smi.csv"); $(cat "$work/env.json")"
torch_lib=$(cd /tmp && "$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null)

# ---- build the shim against this torch; the binaries find it through LD_LIBRARY_PATH ----
step shim 240 scripts/build-shim.sh --out build/shim
cp build/shim/shim-build.txt "$work/" 2>/dev/null
export LD_LIBRARY_PATH=$root/build/shim/lib${torch_lib:+:$torch_lib}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
step version 30 bash -c 'bin/goclip version --json > "$1"' _ "$work/version.json"

# run_test NAME: one test binary from the manifest, in its package folder
run_test() {
  local bin=$1 dir
  dir=$(awk -F'\t' -v b="$bin" '$1 == b {print $2}' build/tests/manifest.tsv)
  if [ -z "$dir" ] || [ ! -d "$dir" ]; then echo "no package folder for $bin"; return 2; fi
  cd "$dir" && "$root/build/tests/$bin" -test.v -test.count=1 -test.timeout "${2:-170}s"
}
export -f run_test
export root

step test-torch_cudatest 180 env NVIDIA_TF32_OVERRIDE=0 bash -c 'run_test torch_cudatest.test 170'

step interop 200 env NVIDIA_TF32_OVERRIDE=0 "$PY" scripts/gpu/interop.py \
  --work "$work" --goclip bin/goclip --fixtures build/gpu-fixtures --out "$work/interop.json"

step bench-peer 180 "$PY" bench/peer/gpu_hf_peft.py --mode both --batch-size 256 \
  --steps "$nsteps" --warmup 10 --precision bf16 --out "$work/bench-peer.json"
step bench-goclip-lora 120 bash -c 'bin/goclip bench --config vit-b-16 --lora-r 64 --lora-alpha 128 \
  --lora-targets q_proj,k_proj,v_proj --batch-size 256 --steps "$1" --warmup 10 --precision bf16 \
  --device cuda --json > "$2"' _ "$nsteps" "$work/bench-goclip-lora.out"
step bench-goclip-full 120 bash -c 'bin/goclip bench --config seed-scratch --batch-size 256 \
  --steps "$1" --warmup 10 --precision bf16 --device cuda --json > "$2"' _ "$nsteps" "$work/bench-goclip-full.out"

step e2e 170 bash scripts/gpu/e2e.sh "$work" $((nsteps + 10))

# the other packages' tests (CPU and CUDA paths against this libtorch), while time lasts
while IFS=$'\t' read -r bin _; do
  [ "$bin" = torch_cudatest.test ] && continue
  step "test-${bin%.test}" 120 bash -c 'run_test "$1" 110' _ "$bin"
done < <(cat build/tests/manifest.tsv 2>/dev/null)

# ---- report ----
echo "=== [$(elapsed)s] report"
if ! timeout 60 "$PY" scripts/gpu/report.py --work "$work" --out "$OUT" --elapsed "$(elapsed)"; then
  echo "report.py failed; raw step results:"
  cat "$work/steps.tsv"
  cp "$work/steps.tsv" "$OUT/gpu-steps.tsv"
fi
tar -czf "$OUT/gpu-logs.tar.gz" -C "$work" --exclude='models' --exclude='adapters' --exclude='synth*' \
  --exclude='e2e-run/model' --exclude='e2e-run/checkpoints' --exclude='ft-small' --exclude='images_*' \
  --exclude='*.npy' . 2>/dev/null || true
ls -la "$OUT"
echo "gpu-check: done in $(elapsed)s"
