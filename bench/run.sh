#!/usr/bin/env bash
# make bench: goclip against the Python peers on this machine's CPU, in one run: the venv's
# PyTorch (a hand-written eager CLIP, the same libtorch as goclip's shim), transformers'
# CLIPModel, transformers + peft (LoRA) and open_clip. Each comparison alternates goclip and
# peer processes (A B C A B C ...) so that all share whatever else the machine is doing; the
# tables give medians over the runs and the load average. Writes
# bench/results/{ops,embed,train-step,preprocess,data}-cpu.md.
#
#   bench/run.sh [ops] [embed] [train] [preprocess] [data]      (default: all five)
#
# Environment: PYTHON (default build/venv/bin/python, the project's venv), THREADS
# (default 2), ROUNDS (goclip/peer pairs per comparison, default 2; DATA_ROUNDS for the
# data part, default 5), GOCLIP (a built goclip binary; default: go build into a
# temporary folder).
#
# Sizes (chosen so that the whole run stays under ~15 minutes on 2 cores):
#   embed: clip-tiny-openai fixture shape (batch 32) and the vit-b-16 shape (batch 8).
#   train: clip-tiny-openai fixture shape and the `tiny` preset (bench/configs/tiny.json:
#          64-pixel images, width 128, full vocabulary), fp32, batch 32: the full step
#          against the eager CLIP, transformers and open_clip; the LoRA step (r=64,
#          alpha=128, q/k/v) against transformers + peft.
#   data:  400 synthetic 500x375 JPEGs (bench/preprocess -gen) written by `goclip shard`
#          as 4 train shards of 90 (and small val/test sets), streamed with 2 workers by
#          bench/data (built twice: as make builds goclip, with libjpeg-turbo, which this
#          part requires, and as the fallback build, Go's image/jpeg) and by
#          bench/peer/data_wds.py (webdataset + PIL, DataLoader num_workers=2); ~2.5 min.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-build/venv/bin/python}
# libgomp's threads spin while they wait for work. On a loaded machine (other jobs on the
# same 2 cores) a Python torch process then runs 5-20x slower with 2 threads than with 1,
# measured here (clip_eager.py, fixture shape: 1.85 s vs 0.21 s per step; 0.17 s with
# PASSIVE); goclip on the same libtorch is not hurt that way. Both sides run PASSIVE, so
# the comparison measures the libraries, not the spinning.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-2}
DATA_ROUNDS=${DATA_ROUNDS:-5}
FIXTURE=../shared/fixtures/clip-tiny-openai/config.json
[ -f "$FIXTURE" ] || FIXTURE=/work/shared/fixtures/clip-tiny-openai/config.json
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(ops embed train preprocess data)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -z "${GOCLIP:-}" ]; then
  go build -tags "$(third_party/find-jpegturbo.sh)" -o "$tmp/goclip" ./cmd/goclip # as make builds it
  GOCLIP=$tmp/goclip
fi
go build -o "$tmp/ops" ./bench/ops
mkdir -p bench/results

# group NAME SIDE 'COMMAND' SIDE 'COMMAND' ...: ROUNDS rounds, each running every side once
# in the order given; one JSON line per run appended to $tmp/NAME.SIDE, the load average
# before each run to $tmp/NAME.load.
group() {
  local name=$1 r i
  shift
  local -a sides=() cmds=()
  while [ $# -gt 0 ]; do sides+=("$1"); cmds+=("$2"); shift 2; done
  for ((r = 0; r < ROUNDS; r++)); do
    for i in "${!sides[@]}"; do
      cut -d' ' -f1 /proc/loadavg >>"$tmp/$name.load"
      echo "[$name] ${sides[$i]} run $((r + 1))/$ROUNDS" >&2
      eval "${cmds[$i]}" | tail -n 1 >>"$tmp/$name.${sides[$i]}"
    done
  done
}

table() { "$PY" bench/tables.py "$1" "$tmp" "$THREADS" "$ROUNDS" "$FIXTURE"; }

start=$SECONDS
for part in "${parts[@]}"; do
  case $part in
  ops)
    group ops go "'$tmp/ops' -threads $THREADS" py "'$PY' bench/peer/ops.py --threads $THREADS"
    table ops >bench/results/ops-cpu.md
    cat bench/results/ops-cpu.md
    ;;
  embed)
    for shape in fixture vitb16; do
      if [ $shape = fixture ]; then cfg=$FIXTURE b=32 n=5 w=1; else cfg=bench/configs/vit-b-16.json b=8 n=2 w=1; fi
      common="--mode embed --config $cfg --batch-size $b --steps $n --warmup $w --threads $THREADS"
      group "embed-$shape" go "'$GOCLIP' bench --json $common" \
        eager "'$PY' bench/peer/clip_eager.py $common" \
        transformers "'$PY' bench/peer/ecosystem.py --lib transformers $common" \
        open_clip "'$PY' bench/peer/ecosystem.py --lib open_clip $common"
    done
    table embed >bench/results/embed-cpu.md
    cat bench/results/embed-cpu.md
    ;;
  train)
    lora="--lora-r 64 --lora-alpha 128 --lora-targets q_proj,k_proj,v_proj"
    for shape in fixture tiny; do
      if [ $shape = fixture ]; then cfg=$FIXTURE n=3; else cfg=bench/configs/tiny.json n=2; fi
      common="--config $cfg --batch-size 32 --steps $n --warmup 1 --threads $THREADS"
      group "train-$shape" go "'$GOCLIP' bench --json $common" \
        eager "'$PY' bench/peer/clip_eager.py --mode train $common" \
        transformers "'$PY' bench/peer/ecosystem.py --lib transformers $common" \
        open_clip "'$PY' bench/peer/ecosystem.py --lib open_clip $common" \
        go_lora "'$GOCLIP' bench --json $common $lora" \
        peft "'$PY' bench/peer/ecosystem.py --lib peft $common $lora"
    done
    table train >bench/results/train-step-cpu.md
    cat bench/results/train-step-cpu.md
    ;;
  preprocess)
    bench/preprocess.sh
    ;;
  data)
    tags=$(GOCLIP_JPEG=turbo third_party/find-jpegturbo.sh) # fails, saying why, without libjpeg-turbo
    go build -tags "$tags" -o "$tmp/data-turbo" ./bench/data
    go build -o "$tmp/data-go" ./bench/data
    go build -o "$tmp/preprocess" ./bench/preprocess
    "$tmp/preprocess" -gen "$tmp/img" -n 400
    { echo image,caption; for f in "$tmp"/img/*.jpg; do echo "${f##*/},a synthetic picture"; done; } >"$tmp/img/captions.csv"
    "$GOCLIP" shard --data "$tmp/img" --out "$tmp/shards" --shard-size 90 --workers 2 >&2
    shards=$tmp/shards/train
    # 5 short rounds (DATA_ROUNDS): on this loaded machine one side's streaming rate
    # varies by up to 2x from run to run, more than the other parts' step times.
    ROUNDS=$DATA_ROUNDS group data turbo "'$tmp/data-turbo' -data '$shards' -workers 2 -time 3s -decode-time 1.5s" \
      go "'$tmp/data-go' -data '$shards' -workers 2 -time 3s -decode-time 1.5s" \
      py "'$PY' bench/peer/data_wds.py --data '$shards' --workers 2 --time 3 --decode-time 1.5"
    ROUNDS=$DATA_ROUNDS table data >bench/results/data-cpu.md
    cat bench/results/data-cpu.md
    ;;
  *)
    echo "bench/run.sh: unknown part $part (want ops, embed, train, preprocess or data)" >&2
    exit 2
    ;;
  esac
done
echo "bench/run.sh: ${parts[*]} took $((SECONDS - start)) s" >&2
