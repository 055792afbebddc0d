"""Step time and peak memory of goclip's training-step speed-ups on the CPU, each alone and
together, against the step without them (bench/results/train-step-features-cpu.md).

Runs `bin/goclip bench` (random inputs already in memory, captions of --caption-length
tokens padded to the context as the data loader gives them), one process per run, the
settings alternated in rounds (A B C ... A B C ...) so that a shared machine's load
falls on all of them alike; a setting's step time is the median over its runs of each
run's median step (and the fastest run's, the least disturbed by other work), its memory
the largest peak RSS (VmHWM) of its runs.

usage: python3 bench/train_step_features.py OUT.md [--rounds 2] [--lora-bf16]

--lora-bf16 instead measures a LoRA step under --precision bf16 (r=64 on q/k/v of
ViT-B/16, batch 4) with the frozen base kept in bf16 (the default) and with the
float32 base that autocast casts at every step (--bf16-base=false)
(bench/results/train-step-bf16-base-cpu.md).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SETTINGS = [  # name, flags
    ("today (no speed-up)", ["--trim-text=false", "--fused-qkv=false"]),
    ("trimmed captions", ["--fused-qkv=false"]),
    ("fused q/k/v", ["--trim-text=false"]),
    ("gradient checkpointing", ["--trim-text=false", "--fused-qkv=false", "--grad-checkpointing"]),
    ("trimmed + fused (the default)", []),
    ("default + checkpointing", ["--grad-checkpointing"]),
]

CASES = [  # name, bench flags
    ("tiny, batch 8", ["--config", "tiny", "--batch-size", "8", "--steps", "10", "--warmup", "2"]),
    ("vit-b-16, batch 8", ["--config", "vit-b-16", "--batch-size", "8", "--steps", "3", "--warmup", "1"]),
]


LORA_BF16_SETTINGS = [
    ("float32 base, autocast casts it (--bf16-base=false)", ["--bf16-base=false"]),
    ("bf16 base (the default)", []),
]

LORA_BF16_CASES = [
    ("vit-b-16 LoRA r=64 q/k/v, bf16, batch 4",
     ["--config", "vit-b-16", "--lora-r", "64", "--lora-alpha", "128", "--precision", "bf16",
      "--batch-size", "4", "--steps", "2", "--warmup", "1"]),
]


def run(flags):
    out = subprocess.run(["bin/goclip", "bench", "--json", "--threads", "2", "--caption-length", "30"] + flags,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--lora-bf16", action="store_true")
    a = ap.parse_args()
    settings, cases = (LORA_BF16_SETTINGS, LORA_BF16_CASES) if a.lora_bf16 else (SETTINGS, CASES)
    rows = []
    for case, flags in cases:
        res = {name: [] for name, _ in settings}
        for r in range(a.rounds):
            for name, extra in settings:
                res[name].append(run(flags + extra))
                print(case, r, name, res[name][-1]["step_ms"], res[name][-1]["peak_memory_mb"], file=sys.stderr)
        base = statistics.median(x["step_ms"] for x in res[settings[0][0]])
        base_min = min(x["step_ms"] for x in res[settings[0][0]])
        for name, _ in settings:
            ms = statistics.median(x["step_ms"] for x in res[name])
            fastest = min(x["step_ms"] for x in res[name])
            mem = max(x["peak_memory_mb"] for x in res[name])
            runs = ", ".join(f"{x['step_ms']:.0f}" for x in res[name])
            rows.append(f"| {case} | {name} | {ms:.1f} | {base / ms:.2f}x | {fastest:.1f} | {base_min / fastest:.2f}x | {mem:.0f} | {runs} |")
    load = os.getloadavg()
    ref = "vs --bf16-base=false" if a.lora_bf16 else "vs today"
    table = (f"<!-- written by bench/train_step_features.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} -->\n"
             f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1, 5, 15 min) on {os.cpu_count()} cores\n\n"
             f"| case | setting | step ms (median of runs) | {ref} | fastest run ms | {ref} | peak RSS MB | each run's median ms |\n"
             "| --- | --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n")
    # A results file with the markers keeps its hand-written text: only the part between
    # them is replaced (the method and the reading of the numbers stay for the next reader).
    begin, end = "<!-- table begin -->\n", "<!-- table end -->\n"
    text = begin + table + end
    if os.path.exists(a.out):
        old = open(a.out).read()
        if begin in old and end in old:
            text = old[:old.index(begin)] + text + old[old.index(end) + len(end):]
    with open(a.out + ".tmp", "w") as f:
        f.write(text)
    os.replace(a.out + ".tmp", a.out)


if __name__ == "__main__":
    main()
