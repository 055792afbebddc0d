#!/usr/bin/env python3
"""Assembles the GPU check's results (scripts/gpu-check.sh's work folder) into
OUT/gpu-report.json and OUT/gpu-report.md: the machine, every step's status and time,
the test binaries' pass/fail/skip counts, the interop checks, and the benchmark table
with issue 15's targets:

  (a) LoRA r=64 ViT-B/16, batch 256: goclip images/s >= 1.3x transformers + peft,
      peak memory <= 0.8x
  (b) full training, batch 256: goclip images/s >= 1.2x transformers
  (c) MFU of both: over the datasheet's dense bf16 peak, and over the bf16 matmul rate
      bench/peer/gpu_hf_peft.py measured in the same call ("MFU meas.")
  (d) end-to-end `goclip finetune` images/s within 5% of (a)'s `goclip bench`

Only the standard library: it must run even where numpy or torch broke.
"""

import argparse
import datetime
import glob
import json
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except Exception:
        return None


def last_json(path):
    try:
        with open(path) as f:
            lines = f.read().strip().splitlines()
    except Exception:
        return None
    for line in reversed(lines):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                pass
    return None


def steps(work):
    out = []
    try:
        with open(os.path.join(work, "steps.tsv")) as f:
            for line in f:
                p = line.rstrip("\n").split("\t")
                if len(p) >= 4:
                    out.append({"name": p[0], "status": p[1], "rc": p[2], "seconds": int(p[3]) if p[3].isdigit() else p[3],
                                "note": p[4] if len(p) > 4 else ""})
    except FileNotFoundError:
        pass
    return out


TEST_LINE = re.compile(r"^\s*--- (PASS|FAIL|SKIP): (\S+)")


def test_results(work):
    res = {}
    for log in sorted(glob.glob(os.path.join(work, "logs", "test-*.log"))):
        name = os.path.basename(log)[5:-4]
        counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}
        failed, skipped = [], []
        with open(log, errors="replace") as f:
            for line in f:
                m = TEST_LINE.match(line)
                if m:
                    counts[m.group(1)] += 1
                    if m.group(1) == "FAIL":
                        failed.append(m.group(2))
                    elif m.group(1) == "SKIP" and "/" not in m.group(2):
                        skipped.append(m.group(2))
        res[name] = {"passed": counts["PASS"], "failed": counts["FAIL"], "skipped": counts["SKIP"],
                     "failed_tests": failed[:30], "skipped_tests": skipped[:30]}
    return res


def e2e_throughput(work, run="e2e-run"):
    path = os.path.join(work, run, "metrics.jsonl")
    rows = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                if "images_per_s" in r and "train_loss" in r:
                    rows.append(r)
    except FileNotFoundError:
        return None
    if not rows:
        return {"error": "no training rows with images_per_s in metrics.jsonl"}
    steady = rows[1:] or rows  # the first row holds the warm-up steps
    return {"rows": len(rows), "images_per_s": round(statistics.median(r["images_per_s"] for r in steady), 1),
            "first_row_images_per_s": rows[0]["images_per_s"],
            "train_loss_first": rows[0]["train_loss"], "train_loss_last": rows[-1]["train_loss"],
            "times": read_json(os.path.join(work, "e2e-times.json"))}


def ratio(a, b):
    try:
        return round(float(a) / float(b), 3) if a is not None and b else None
    except (TypeError, ValueError):
        return None


def fmt(v, nd=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--elapsed", type=int, default=None)
    args = ap.parse_args()
    w = args.work
    os.makedirs(args.out, exist_ok=True)

    smi = ""
    try:
        smi = open(os.path.join(w, "nvidia-smi.txt")).read().strip().splitlines()[0]
    except Exception:
        pass
    smi_fields = [s.strip() for s in smi.split(",")] if smi else []
    env = read_json(os.path.join(w, "env.json")) or {}
    shim = {}
    try:
        for line in open(os.path.join(w, "shim-build.txt")):
            k, _, v = line.partition(":")
            shim[k.strip()] = v.strip()
    except FileNotFoundError:
        pass

    peer = read_json(os.path.join(w, "bench-peer.json")) or {}
    pr = peer.get("results", {})
    gl = last_json(os.path.join(w, "bench-goclip-lora.json"))
    gf = last_json(os.path.join(w, "bench-goclip-full.json"))
    gl32 = last_json(os.path.join(w, "bench-goclip-lora-fp32-base.json"))
    e2e = e2e_throughput(w)
    e2e_host = e2e_throughput(w, "e2e-run-host-input")
    e2e_sync = e2e_throughput(w, "e2e-run-sync-every-step")

    def get(d, k):
        return d.get(k) if isinstance(d, dict) else None

    bench = {
        "lora": {"goclip": gl, "peer": pr.get("lora")},
        "full": {"goclip": gf, "peer": pr.get("full")},
        "lora_fp32_base": gl32,
        "e2e_finetune": e2e,
        "e2e_finetune_host_input": e2e_host,
        "e2e_finetune_sync_every_step": e2e_sync,
    }
    targets = {
        "a_lora_speedup": {"value": ratio(get(gl, "images_per_s"), get(pr.get("lora"), "images_per_s")), "target": ">= 1.3"},
        "a_lora_memory_ratio": {"value": ratio(get(gl, "peak_memory_mb"), get(pr.get("lora"), "peak_memory_mb")), "target": "<= 0.8"},
        "b_full_speedup": {"value": ratio(get(gf, "images_per_s"), get(pr.get("full"), "images_per_s")), "target": ">= 1.2"},
        "d_e2e_vs_bench": {"value": ratio(get(e2e, "images_per_s"), get(gl, "images_per_s")), "target": ">= 0.95"},
        "lora_bf16_base_speedup": {"value": ratio(get(gl, "images_per_s"), get(gl32, "images_per_s")), "target": ">= 1.0"},
        "lora_bf16_base_memory_ratio": {"value": ratio(get(gl, "peak_memory_mb"), get(gl32, "peak_memory_mb")), "target": "<= 1.0"},
        "e2e_device_vs_host_input": {"value": ratio(get(e2e, "images_per_s"), get(e2e_host, "images_per_s")), "target": ">= 1.0"},
        # one host read per --log-every window against one per step (the same losses)
        "e2e_read_per_window_vs_every_step": {"value": ratio(get(e2e, "images_per_s"), get(e2e_sync, "images_per_s")), "target": ">= 1.0"},
    }
    # MFU over the matmul rate measured in this call: goclip's FLOPs per step over its
    # step time (GFLOP per ms = TFLOP/s), the peer's own mfu_measured.
    matmul = peer.get("matmul") if isinstance(peer.get("matmul"), dict) else {}
    rate = matmul.get("tflops")
    for r in (gl, gf):
        if isinstance(r, dict) and rate and r.get("gflops_per_step") and r.get("step_ms"):
            r["mfu_measured"] = round(r["gflops_per_step"] / r["step_ms"] / rate, 4)
    for t in targets.values():
        v, spec = t["value"], t["target"]
        if v is None:
            t["met"] = None
        elif spec.startswith(">="):
            t["met"] = v >= float(spec[2:])
        else:
            t["met"] = v <= float(spec[2:])

    interop = read_json(os.path.join(w, "interop.json")) or {}
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": smi_fields[0] if smi_fields else env.get("device"),
        "driver": smi_fields[1] if len(smi_fields) > 1 else None,
        "gpu_memory": smi_fields[2] if len(smi_fields) > 2 else None,
        "versions": env,
        "goclip_version": read_json(os.path.join(w, "version.json")),
        "shim_build": shim,
        "elapsed_s": args.elapsed,
        "steps": steps(w),
        "tests": test_results(w),
        "interop": interop,
        "bench": bench,
        "matmul": matmul,
        "targets": targets,
    }
    with open(os.path.join(args.out, "gpu-report.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)

    L = []
    L.append("# goclip GPU check")
    L.append("")
    L.append(f"- date: {report['date']}")
    L.append(f"- device: {report['device']} ({report['gpu_memory']}), driver {report['driver']}")
    L.append(f"- PyTorch {env.get('torch')} (CUDA {env.get('cuda')}), transformers {env.get('transformers')}, peft {env.get('peft')}")
    L.append(f"- shim: {shim.get('method', '?')} build, torch {shim.get('torch', shim.get('prefix', '?'))}, "
             f"GOCLIP_WITH_CUDA={shim.get('goclip_with_cuda', '?')}, CUDA headers: {shim.get('cuda_headers', '-')}")
    L.append(f"- total {args.elapsed} s")
    L.append("")
    L.append("## Steps")
    L.append("")
    L.append("| step | status | seconds |")
    L.append("| --- | --- | ---: |")
    for s in report["steps"]:
        L.append(f"| {s['name']} | {s['status']}{' (' + s['note'] + ')' if s['note'] else ''} | {s['seconds']} |")
    L.append("")
    if report["tests"]:
        L.append("## Tests")
        L.append("")
        L.append("| binary | passed | failed | skipped | failing tests |")
        L.append("| --- | ---: | ---: | ---: | --- |")
        for k, v in report["tests"].items():
            L.append(f"| {k} | {v['passed']} | {v['failed']} | {v['skipped']} | {', '.join(v['failed_tests']) or '-'} |")
        L.append("")
    L.append("## Interop (float32, max |goclip - ref| / max |ref| <= 1e-4)")
    L.append("")
    L.append("| check | ok | details |")
    L.append("| --- | --- | --- |")
    for k, v in interop.get("checks", {}).items():
        det = {a: b for a, b in v.items() if a not in ("ok", "traceback", "files", "run_files", "adapter_files", "dir")}
        txt = ", ".join(f"{a}={b:.3g}" if isinstance(b, float) else f"{a}={b}" for a, b in det.items())
        L.append(f"| {k} | {'yes' if v.get('ok') else 'NO'} | {txt[:400].replace('|', '/')} |")
    L.append("")
    L.append("## Benchmarks (batch 256, bf16 autocast, SDPA, fused AdamW, random inputs on the device)")
    L.append("")
    if rate:
        L.append(f"Measured bf16 matmul rate: {rate} TFLOP/s ({matmul.get('n')}^2 products; the MFU meas. denominator).")
        L.append("")
    L.append("| run | images/s | step ms | peak MiB | MFU | MFU meas. |")
    L.append("| --- | ---: | ---: | ---: | ---: | ---: |")
    for mode, label in (("lora", "LoRA r=64 q/k/v, vit-b-16"), ("full", "full training, seed-scratch")):
        for who in ("goclip", "peer"):
            r = bench[mode][who]
            name = f"{label}: {'goclip' if who == 'goclip' else 'transformers + peft' if mode == 'lora' else 'transformers'}"
            if not isinstance(r, dict) or "images_per_s" not in r:
                L.append(f"| {name} | failed: {str(get(r, 'error') or 'no result')[:120]} | | | | |")
                continue
            L.append(f"| {name} | {fmt(r.get('images_per_s'))} | {fmt(r.get('step_ms'))} | "
                     f"{fmt(r.get('peak_memory_mb'), 0)} | {fmt(r.get('mfu'), 3)} | {fmt(r.get('mfu_measured'), 3)} |")
    if isinstance(gl32, dict) and "images_per_s" in gl32:
        L.append(f"| LoRA: goclip --bf16-base=false (float32 base, cast every step) | {fmt(gl32.get('images_per_s'))} | {fmt(gl32.get('step_ms'))} | "
                 f"{fmt(gl32.get('peak_memory_mb'), 0)} | {fmt(gl32.get('mfu'), 3)} | |")
    if isinstance(e2e, dict) and "images_per_s" in e2e:
        L.append(f"| end-to-end goclip finetune (synthetic 224 px, cached) | {fmt(e2e['images_per_s'])} | | | | |")
    if isinstance(e2e_host, dict) and "images_per_s" in e2e_host:
        L.append(f"| the same, --device-input=false (host normalisation, copy in the step) | {fmt(e2e_host['images_per_s'])} | | | | |")
    L.append("")
    L.append("| target | value | wanted | met |")
    L.append("| --- | ---: | --- | --- |")
    for k, t in targets.items():
        L.append(f"| {k} | {fmt(t['value'], 3)} | {t['target']} | {'-' if t['met'] is None else 'yes' if t['met'] else 'NO'} |")
    L.append("")
    with open(os.path.join(args.out, "gpu-report.md"), "w") as f:
        f.write("\n".join(L) + "\n")
    print("\n".join(L))
    return 0


if __name__ == "__main__":
    sys.exit(main())
