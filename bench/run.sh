#!/usr/bin/env bash
# make bench: goclip against the Python PyTorch peers on this machine's CPU, in one run.
# Each comparison alternates goclip and peer processes (A B A B ...) so that both share
# whatever else the machine is doing; the tables give medians over the runs and the load
# average. Writes bench/results/{ops,embed,train-step,preprocess}-cpu.md.
#
#   bench/run.sh [ops] [embed] [train] [preprocess]      (default: all four)
#
# Environment: PYTHON (default /usr/bin/python3, Debian's python3-torch), THREADS
# (default 2), ROUNDS (goclip/peer pairs per comparison, default 2), GOCLIP (a built
# goclip binary; default: go build into a temporary folder).
#
# Sizes (chosen so that the whole run stays under ~15 minutes on 2 cores with Debian's
# libtorch and OpenBLAS, ~25 GFLOP/s; with the reference netlib BLAS that libtorch-dev
# falls back to, ~1-2 GFLOP/s, it takes hours: install libopenblas0-pthread):
#   embed: clip-tiny-openai fixture shape and the vit-b-16 shape, batch 32 (one timed
#          pass for vit-b-16: 1.1 TFLOPs per image batch).
#   train: clip-tiny-openai fixture shape and the `tiny` preset (bench/configs/tiny.json:
#          64-pixel images, width 128, full vocabulary), fp32, batch 32.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-/usr/bin/python3}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-2}
FIXTURE=../shared/fixtures/clip-tiny-openai/config.json
[ -f "$FIXTURE" ] || FIXTURE=/work/shared/fixtures/clip-tiny-openai/config.json
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(ops embed train preprocess)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -z "${GOCLIP:-}" ]; then
  go build -o "$tmp/goclip" ./cmd/goclip
  GOCLIP=$tmp/goclip
fi
go build -o "$tmp/ops" ./bench/ops
mkdir -p bench/results

# pair NAME 'GOCLIP COMMAND' 'PEER COMMAND': ROUNDS alternating runs, one JSON line each,
# appended to $tmp/NAME.go and $tmp/NAME.py; the load average before each run to .load.
pair() {
  local name=$1 gocmd=$2 pycmd=$3
  for ((r = 0; r < ROUNDS; r++)); do
    cut -d' ' -f1 /proc/loadavg >>"$tmp/$name.load"
    echo "[$name] goclip run $((r + 1))/$ROUNDS" >&2
    eval "$gocmd" | tail -n 1 >>"$tmp/$name.go"
    cut -d' ' -f1 /proc/loadavg >>"$tmp/$name.load"
    echo "[$name] peer run $((r + 1))/$ROUNDS" >&2
    eval "$pycmd" | tail -n 1 >>"$tmp/$name.py"
  done
}

table() { "$PY" bench/tables.py "$1" "$tmp" "$THREADS" "$ROUNDS" "$FIXTURE"; }

start=$SECONDS
for part in "${parts[@]}"; do
  case $part in
  ops)
    pair ops "'$tmp/ops' -threads $THREADS" "'$PY' bench/peer/ops.py --threads $THREADS"
    table ops >bench/results/ops-cpu.md
    cat bench/results/ops-cpu.md
    ;;
  embed)
    pair embed-fixture "'$GOCLIP' bench --json --mode embed --config $FIXTURE --batch-size 32 --steps 5 --warmup 1 --threads $THREADS" \
      "'$PY' bench/peer/clip_eager.py --mode embed --config $FIXTURE --batch-size 32 --steps 5 --warmup 1 --threads $THREADS"
    pair embed-vitb16 "'$GOCLIP' bench --json --mode embed --config bench/configs/vit-b-16.json --batch-size 32 --steps 1 --warmup 0 --threads $THREADS" \
      "'$PY' bench/peer/clip_eager.py --mode embed --config bench/configs/vit-b-16.json --batch-size 32 --steps 1 --warmup 0 --threads $THREADS"
    table embed >bench/results/embed-cpu.md
    cat bench/results/embed-cpu.md
    ;;
  train)
    pair train-fixture "'$GOCLIP' bench --json --config $FIXTURE --batch-size 32 --steps 3 --warmup 1 --threads $THREADS" \
      "'$PY' bench/peer/clip_eager.py --mode train --config $FIXTURE --batch-size 32 --steps 3 --warmup 1 --threads $THREADS"
    pair train-tiny "'$GOCLIP' bench --json --config bench/configs/tiny.json --batch-size 32 --steps 2 --warmup 1 --threads $THREADS" \
      "'$PY' bench/peer/clip_eager.py --mode train --config bench/configs/tiny.json --batch-size 32 --steps 2 --warmup 1 --threads $THREADS"
    table train >bench/results/train-step-cpu.md
    cat bench/results/train-step-cpu.md
    ;;
  preprocess)
    bench/preprocess.sh
    ;;
  *)
    echo "bench/run.sh: unknown part $part (want ops, embed, train or preprocess)" >&2
    exit 2
    ;;
  esac
done
echo "bench/run.sh: ${parts[*]} took $((SECONDS - start)) s" >&2
