"""Writes one markdown table of bench/run.sh from the JSON lines it collected.

    python3 bench/tables.py ops|embed|train|data TMPDIR THREADS ROUNDS FIXTURE_CONFIG

Every number is the median over the runs of each side (each run's own figure being a
median over its steps); ratios are goclip time / peer time (lower is better), except in
the data table, which compares rates (images/s, higher is better).
"""
import datetime
import json
import os
import statistics
import subprocess
import sys

part, tmp, threads, rounds, fixture = sys.argv[1:6]


def runs(name, side):
    path = os.path.join(tmp, f"{name}.{side}")
    if not os.path.exists(path):
        return []
    return [json.loads(line) for line in open(path) if line.strip().startswith("{")]


def med(rs, key):
    vals = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(vals) if vals else float("nan")


def loads(name):
    path = os.path.join(tmp, f"{name}.load")
    return [float(x) for x in open(path).read().split()] if os.path.exists(path) else []


def header(title, names, torch_version, rates=False):
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    ls = [x for n in names for x in loads(n)]
    go = subprocess.run(["go", "version"], capture_output=True, text=True).stdout.strip()
    print(f"# {title}\n")
    print(f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    print(f"- machine: {os.cpu_count()} CPUs (`nproc`), {cpu}; 1-minute load average before each run: "
          f"min {min(ls):.2f}, median {statistics.median(ls):.2f}, max {max(ls):.2f} "
          + ("(it counts the benchmark's own processes: about 2 while its 2 workers run)" if rates else "(other jobs were running)")
          if ls else f"- machine: {os.cpu_count()} CPUs, {cpu}")
    print(f"- libtorch {torch_version} (the venv's torch wheel; goclip's shim is built against the same "
          f"library); {go}")
    if rates:
        print(f"- {rounds} runs per side, goclip and the peer alternating (turbo, go, Python, turbo, ...); medians")
    else:
        print(f"- threads: {threads} on both sides (`torch.set_num_threads`, `--threads`); "
              f"{rounds} runs per side, goclip and the peers alternating; medians")
    print(f"- OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')} on both sides (bench/run.sh says why)")
    print("- ratio: goclip rate / peer rate (higher is better)\n" if rates else
          "- ratio: goclip time / peer time (lower is better)\n")


def verdict(ratio, target):
    return "meets" if ratio <= target else "misses"


if part == "ops":
    g, p = runs("ops", "go"), runs("ops", "py")
    header("Op overhead: goclip vs Python PyTorch (CPU)", ["ops"], p[0].get("torch", "?") if p else "?")
    print("Work: `bench/ops/main.go` and `bench/peer/ops.py`, the same three operations.\n")
    print("| operation | goclip µs | PyTorch µs | goclip/PyTorch | target | |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for key, label, target in [("add_1_us", "add, 1 element", 0.5),
                               ("linear_64_fwd_bwd_us", "linear 64x64, forward + backward", 0.5),
                               ("adamw_1m_us", "AdamW step, 1M parameters", 1.0)]:
        gv, pv = med(g, key), med(p, key)
        r = gv / pv
        print(f"| {label} | {gv:,.2f} | {pv:,.2f} | {r:.2f}x | ≤ {target}x | {verdict(r, target)} |")
    print("\nWhere the time goes: both sides call the same libtorch kernels through the same "
          "dispatcher, and that (TensorIterator setup, autograd's VariableType, the allocator) is most "
          "of a 1-element add. goclip adds two cgo calls (the op and the handle's free), a scope "
          "registration and a Go allocation per op; Python adds argument parsing and a Python object. "
          "Those two extras are about the same size, so the ratio sits near 1.0x. Reaching 0.5x would "
          "mean skipping libtorch's dispatcher (calling CPU kernels directly, without autograd), which "
          "the bindings do not do. The linear gains come from goclip not building Python objects for "
          "the autograd graph's outputs and gradients; AdamW is one C++ loop on both sides.")

elif part == "embed":
    names = ["embed-fixture", "embed-vitb16"]
    p0 = runs(names[0], "eager")
    header("Embedding throughput: goclip vs the eager CLIP, transformers and open_clip (CPU, fp32, no grad)",
           names, p0[0].get("torch", "?") if p0 else "?")
    print("Peers: `bench/peer/clip_eager.py` (HF CLIPModel's structure, hand-written), transformers' "
          "`CLIPModel.get_image_features` / `get_text_features` (SDPA) and open_clip's `encode_image` / "
          "`encode_text` (`bench/peer/ecosystem.py`). goclip: `goclip bench --mode embed`. Random inputs, "
          "eval mode, image and text batches timed separately. Ratio: goclip time / the best peer's time.\n")
    print("| shape | batch | tower | goclip ms | eager ms | transformers ms | open_clip ms | goclip items/s "
          "| goclip/best peer | target | |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, label in [("embed-fixture", f"clip-tiny-openai (`{os.path.relpath(fixture)}`)"),
                        ("embed-vitb16", "vit-b-16 (`bench/configs/vit-b-16.json`)")]:
        g = runs(name, "go")
        if not g:
            continue
        b = g[0]["batch_size"]
        for tower, key in [("image", "image_ms"), ("text", "text_ms")]:
            gv = med(g, key)
            pv = {peer: med(runs(name, peer), key) for peer in ("eager", "transformers", "open_clip")}
            best = min(v for v in pv.values() if v == v)
            r = gv / best
            print(f"| {label} | {b} | {tower} | {gv:,.1f} | {pv['eager']:,.1f} | {pv['transformers']:,.1f} "
                  f"| {pv['open_clip']:,.1f} | {b * 1e3 / gv:,.1f} | {r:.2f}x | ≤ 1.0x | {verdict(r, 1.0)} |")

elif part == "train":
    names = ["train-fixture", "train-tiny"]
    p0 = runs(names[0], "eager")
    header("Training step: goclip vs the eager CLIP, transformers, transformers + peft and open_clip (CPU, fp32)",
           names, p0[0].get("torch", "?") if p0 else "?")
    print("A step: forward of both towers, symmetric contrastive loss, backward, clip_grad_norm(1.0), "
          "AdamW (betas 0.9/0.98, eps 1e-6, weight decay 0.1 on matrices), zero grad, logit-scale clamp. "
          "Random inputs already in memory. goclip: `goclip bench`; peers: `bench/peer/clip_eager.py --mode train` "
          "(hand-written eager CLIP), `bench/peer/ecosystem.py --lib transformers|open_clip|peft` (CLIPModel with "
          "SDPA; open_clip's CLIP of the same sizes; CLIPModel + peft LoRA r=64, alpha=128 on q/k/v). "
          "Full step: every parameter trained, ratio against the fastest of the three full peers. LoRA step: "
          "only the adapter trained, against transformers + peft. Peak memory is the process's peak RSS "
          "(VmHWM), model build included.\n")
    print("| shape | step | trainable params | goclip ms/step | peer | peer ms/step | goclip images/s "
          "| goclip peak RSS MB | peer peak RSS MB | goclip/peer | target | |")
    print("| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, label in [("train-fixture", f"clip-tiny-openai (`{os.path.relpath(fixture)}`)"),
                        ("train-tiny", "tiny preset (`bench/configs/tiny.json`)")]:
        for step, go_side, peers in [("full", "go", ("eager", "transformers", "open_clip")),
                                     ("LoRA r=64", "go_lora", ("peft",))]:
            g = runs(name, go_side)
            if not g:
                continue
            gv = med(g, "step_ms")
            best = min(peers, key=lambda peer: med(runs(name, peer), "step_ms"))
            for peer in peers:
                p = runs(name, peer)
                if not p:
                    continue
                pv = med(p, "step_ms")
                r = gv / pv
                mark = f"{verdict(r, 0.9)}" if peer == best else "(not the best peer)"
                print(f"| {label} | {step} | {g[0].get('trainable', g[0].get('params', 0)):,} | {gv:,.0f} | {peer} "
                      f"| {pv:,.0f} | {32 * 1e3 / gv:,.2f} | {med(g, 'peak_memory_mb'):,.0f} "
                      f"| {med(p, 'peak_memory_mb'):,.0f} | {r:.2f}x | ≤ 0.9x | {mark} |")
    print(f"\nGFLOPs per step (model FLOPs, 3x forward, `goclip bench`'s formula): " +
          ", ".join(f"{n}: {runs(n, 'go')[0]['gflops_per_step']:.2f}" for n in names if runs(n, 'go')))

elif part == "data":
    t, g, p = runs("data", "turbo"), runs("data", "go"), runs("data", "py")
    header("Shard pipeline: goclip vs webdataset + PIL (CPU)", ["data"], p[0].get("torch", "?") if p else "?", rates=True)
    w = p[0]["workers"] if p else 2
    print(f"Work: 400 synthetic 500x375 JPEGs (Go image/jpeg, quality 90, 4:2:0; `bench/preprocess -gen`) "
          f"written by `goclip shard --shard-size 90`; the 4 train shards (360 samples) are read, decoded and "
          f"preprocessed to 224 (bicubic shortest-side resize, centre crop, normalise to float32 CHW) into "
          f"batches of 32 with {w} workers, whole epochs for at least 3 s, timed from the first batch. "
          f"goclip: `bench/data` (`dataset.StreamLoader`, {w} decoding goroutines), built as `make build` builds "
          f"goclip where libjpeg-turbo is installed (`-tags jpegturbo`, `internal/jpegturbo`, "
          f"{t[0].get('decoder', '?') if t else '?'}) and as the fallback build without it (Go's image/jpeg). "
          f"Peer: `bench/peer/data_wds.py`, webdataset {p[0].get('webdataset', '?') if p else '?'} "
          f"`WebDataset(...).to_tuple('jpg', 'txt')` + PIL {p[0].get('pil', '?') if p else '?'} and "
          f"`bench/peer/preprocess_pil.py`'s CLIPImageProcessor arithmetic, torch `DataLoader(num_workers={w}, "
          f"batch_size=32)`. One core: the JPEG bytes of 100 samples held in memory, decoded to RGB one after "
          f"another for at least 1.5 s (goclip: `dataset.DecodeImage`; PIL: `Image.open(BytesIO(b)).convert('RGB')`), "
          f"the decoded images preprocessed as above (`dataset.Preprocess`; `preprocess_pil.preprocess_image`), "
          f"then both together (`preprocess_pil.preprocess`).\n")
    pv = med(p, "stream_images_per_s")
    print(f"| pipeline ({w} workers) | images/s | vs webdataset + PIL | target | |")
    print("| --- | ---: | ---: | ---: | --- |")
    print(f"| webdataset + PIL, DataLoader | {pv:,.0f} | 1.00x | | |")
    for rs, label in [(t, "goclip, libjpeg-turbo (default build)"), (g, "goclip, Go image/jpeg (fallback build)")]:
        v = med(rs, "stream_images_per_s")
        r = v / pv
        print(f"| {label} | {v:,.0f} | {r:.2f}x | ≥ 1.5x | {'meets' if r >= 1.5 else 'misses'} |")
    print("\n| one core, 500x375 JPEGs | PIL images/s | goclip libjpeg-turbo images/s "
          "| goclip Go image/jpeg images/s | turbo/PIL | turbo/Go |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for key, label in [("decode_images_per_s", "raw decode to RGB (bytes in memory)"),
                       ("preprocess_images_per_s", "preprocess a decoded image to 224"),
                       ("decode_preprocess_images_per_s", "decode + preprocess to 224")]:
        pd, td, gd = med(p, key), med(t, key), med(g, key)
        print(f"| {label} | {pd:,.0f} | {td:,.0f} | {gd:,.0f} | {td / pd:.2f}x | {td / gd:.2f}x |")
    print("\nThe three sides alternate run by run and the tables give medians (per-run figures below); "
          "the load average above says how busy the machine was. The preprocessing row is the same code in "
          "both goclip builds (their difference there is noise); PIL's preprocessing includes numpy's "
          "float conversion and normalisation.")
    print(f"\nPer-run figures (images/s, streaming): goclip turbo " + ", ".join(f"{r['stream_images_per_s']:.0f}" for r in t)
          + "; goclip Go " + ", ".join(f"{r['stream_images_per_s']:.0f}" for r in g)
          + "; webdataset + PIL " + ", ".join(f"{r['stream_images_per_s']:.0f}" for r in p) + ".")

