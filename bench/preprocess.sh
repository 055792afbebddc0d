#!/usr/bin/env bash
# Image pipeline benchmark: goclip (dataset.Loader, Go) against PIL + numpy with the
# same number of worker processes, on the same synthetic 500x375 JPEGs, in one run.
# Writes bench/results/preprocess-cpu.md.
#
#   bench/preprocess.sh [IMAGES] [WORKERS]      (defaults: 200, 2)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}
W=${2:-2}
PY=${PYTHON:-build/venv/bin/python}
TIME=${BENCH_TIME:-5s}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

go build -o "$tmp/preprocess" ./bench/preprocess
"$tmp/preprocess" -gen "$tmp/img" -n "$N"
# Alternate the two to share whatever else the machine is doing.
go1=$("$tmp/preprocess" -dir "$tmp/img" -workers "$W" -time "$TIME")
py1=$("$PY" bench/peer/preprocess_pil.py --dir "$tmp/img" --workers "$W" --time "${TIME%s}")
go2=$("$tmp/preprocess" -dir "$tmp/img" -workers "$W" -time "$TIME")
py2=$("$PY" bench/peer/preprocess_pil.py --dir "$tmp/img" --workers "$W" --time "${TIME%s}")

mkdir -p bench/results
"$PY" - "$go1" "$go2" "$py1" "$py2" "$N" "$W" <<'PYEOF' > bench/results/preprocess-cpu.md
import json, os, platform, subprocess, sys, datetime
go = [json.loads(s) for s in sys.argv[1:3]]
py = [json.loads(s) for s in sys.argv[3:5]]
n, w = sys.argv[5], sys.argv[6]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
nproc = os.cpu_count()
load = open("/proc/loadavg").read().split()[:3]
best = lambda rs, k: max(r[k] for r in rs)
g = best(go, "decode_preprocess_images_per_s")
p = best(py, "decode_preprocess_images_per_s")
print("# Image pipeline: goclip vs PIL (CPU)\n")
print(f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
print(f"- machine: {nproc} CPUs (`nproc`), {cpu}; load average at the end {' '.join(load)}")
print(f"- work: {n} synthetic 500x375 JPEGs (Go image/jpeg, quality 90, 4:2:0), decode + CLIP preprocessing at 224 "
      f"(bicubic shortest-side resize, centre crop, normalise to float32 CHW), {w} workers each")
print(f"- peer: PIL {py[0]['pil']} + numpy {py[0]['numpy']} (the venv's python, multiprocessing.Pool({w})); "
      "goclip: `dataset.Loader` (batches of 32, float32)")
print("- each side ran twice, alternating; the table gives the better run of each\n")
print("| pipeline | images/s | vs PIL |")
print("| --- | ---: | ---: |")
print(f"| PIL + numpy, decode + preprocess | {p:,.0f} | 1.00x |")
print(f"| goclip, decode + preprocess | {g:,.0f} | {g/p:.2f}x |")
for k, label in [("cache_uint8_images_per_s", "goclip, `.npy` cache, uint8 batches"),
                 ("cache_float32_images_per_s", "goclip, `.npy` cache, float32 normalised batches"),
                 ("cache_uint8_augment_images_per_s", "goclip, `.npy` cache, uint8 + random resized crop + flip")]:
    v = best(go, k)
    print(f"| {label} | {v:,.0f} | (other work) |")
print(f"\nCache build (decode + resize + crop + write): {best(go, 'cache_build_images_per_s'):,.0f} images/s.")
print("\nTargets: goclip/PIL >= 1.0x for decode + preprocess; >= 20,000 images/s from the cache.")
PYEOF
cat bench/results/preprocess-cpu.md
