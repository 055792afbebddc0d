#!/usr/bin/env python3
"""GPU peer of `goclip bench`: transformers' CLIPModel (+ peft LoRA) training steps.

Same work as `goclip bench`: random inputs already on the device (pixels [B, 3, S, S],
ids [B, T] ending in the end token; S = 224, T = 77 for ViT-B/16), forward with CLIP's symmetric contrastive loss
(return_loss=True), backward, torch.optim.AdamW (fused) step, zero_grad; bf16 autocast,
SDPA attention, float32 parameters.

  lora  ViT-B/16 (openai/clip-vit-base-patch16's architecture), peft LoRA r=64, alpha=128
        on q_proj/k_proj/v_proj of both towers (5,898,240 trainable parameters)
  full  every parameter trained (the study's from-scratch model, seed-scratch)

Prints one JSON object: per mode step_ms (median of per-step CUDA event times),
images_per_s, peak_memory_mb (torch.cuda.max_memory_allocated over the timed steps,
model and optimizer state included), mfu (DESIGN.md's FLOPs: 41.09 GFLOPs forward per
pair, x3 training, x2 LoRA, over the device's dense bf16 peak), trainable/total counts;
and matmul: the bf16 matrix-product rate measured here (--matmul-n, square products),
the denominator of the measured MFU (mfu_measured) that the GPU report uses.

  python3 bench/peer/gpu_hf_peft.py --mode both --batch-size 256 --steps 30 --warmup 10

--device cpu runs the same code on the CPU (wall-clock step times, no fused AdamW,
peak_memory_mb null, mfu null), for CI at tiny sizes: the GPU run then fails only on
what is truly GPU-specific (cmd/goclip's gpu_python_test.go):

  python3 bench/peer/gpu_hf_peft.py --device cpu --lora-config small --full-config small \
    --batch-size 4 --steps 2 --warmup 1 --matmul-n 256
"""

import argparse
import gc
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "gpu"))
import common  # noqa: E402


def bench(mode, args, torch, matmul=None):
    from peft import LoraConfig, get_peft_model

    dev = torch.device(args.device)
    cfg_name = args.lora_config if mode == "lora" else args.full_config
    torch.manual_seed(0)
    model = common.build_clip(common.clip_config(cfg_name), args.attn)
    attn = common.attn_impl(model)
    total = sum(p.numel() for p in model.parameters())
    if mode == "lora":
        model = get_peft_model(model, LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.0,
                                                 target_modules=args.lora_targets.split(",")))
        total = sum(p.numel() for p in model.parameters())
    model.to(dev).train()
    params = [p for p in model.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in params)
    cuda = dev.type == "cuda"
    opt = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2, fused=cuda)

    b = args.batch_size
    vc, tc = model.config.vision_config, model.config.text_config
    g = torch.Generator(device=dev).manual_seed(0)
    pixels = torch.randn(b, 3, vc.image_size, vc.image_size, device=dev, generator=g)  # [B, 3, S, S]
    ids = torch.randint(1, 49406, (b, tc.max_position_embeddings), device=dev, generator=g)  # [B, T]
    ids[:, -1] = 49407
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[args.precision]

    def step():
        with torch.autocast(device_type=dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(input_ids=ids, pixel_values=pixels, return_loss=True).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    for _ in range(args.warmup):
        loss = step()
    sync()
    warm_s = time.time() - t0
    t0 = time.time()
    if cuda:  # per-step CUDA event times
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(args.steps)]
        for start, end in events:
            start.record()
            loss = step()
            end.record()
        sync()
        times = [s.elapsed_time(e) for s, e in events]
    else:  # the CPU runs synchronously: wall-clock per step
        times = []
        for _ in range(args.steps):
            t = time.perf_counter()
            loss = step()
            times.append((time.perf_counter() - t) * 1000.0)
    wall = time.time() - t0
    step_ms = statistics.median(times)
    ips = b * 1000.0 / step_ms
    peak = common.peak_flops(torch.cuda.get_device_name(dev)) if cuda else None
    # DESIGN.md's FLOPs are ViT-B/16's (seed-scratch has the same shapes); none for others
    flops = common.VIT_B16_FWD_FLOPS * common.TRAIN_FACTOR[mode] if cfg_name in ("vit-b-16", "seed-scratch") else None
    res = {
        "config": cfg_name, "device": str(dev), "batch_size": b, "steps": args.steps, "warmup": args.warmup,
        "image_size": vc.image_size, "text_length": tc.max_position_embeddings,
        "precision": args.precision, "attn": attn, "fused_adamw": cuda,
        "step_ms": round(step_ms, 3), "step_ms_mean": round(sum(times) / len(times), 3),
        "step_ms_min": round(min(times), 3), "wall_images_per_s": round(b * args.steps / wall, 1),
        "images_per_s": round(ips, 1),
        "peak_memory_mb": round(torch.cuda.max_memory_allocated(dev) / 2**20, 1) if cuda else None,
        "gflops_per_image": round(flops / 1e9, 2) if flops else None,
        "mfu": round(ips * flops / peak, 4) if peak and flops else None,
        "trainable": trainable, "total": total, "final_loss": float(loss.detach()),
        "warmup_s": round(warm_s, 1),
    }
    if flops and matmul and matmul.get("tflops"):
        res["mfu_measured"] = round(ips * flops / (matmul["tflops"] * 1e12), 4)
    del model, opt, params, pixels, ids, loss
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return res


def matmul_rate(torch, dev, n, reps=20):
    """The bf16 rate of square [n, n] @ [n, n] products on dev, in TFLOP/s (2 n^3 FLOPs
    each): the median of reps timed products after 3 untimed ones."""
    g = torch.Generator(device=dev).manual_seed(0)
    a = torch.randn(n, n, device=dev, generator=g).to(torch.bfloat16)
    b = torch.randn(n, n, device=dev, generator=g).to(torch.bfloat16)
    cuda = dev.type == "cuda"
    for _ in range(3):
        c = a @ b
    if cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        if cuda:
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            c = a @ b
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e) / 1000.0)
        else:
            t = time.perf_counter()
            c = a @ b
            times.append(time.perf_counter() - t)
    sec = statistics.median(times)
    del a, b, c
    return {"n": n, "dtype": "bfloat16", "reps": reps, "ms": round(sec * 1000, 4), "tflops": float(f"{2.0 * n**3 / sec / 1e12:.4g}")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["lora", "full", "both"], default="both")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--precision", choices=["bf16", "fp16", "fp32"], default="bf16")
    ap.add_argument("--attn", default="sdpa", help="transformers attention implementation")
    ap.add_argument("--lora-config", default="vit-b-16")
    ap.add_argument("--full-config", default="seed-scratch")
    ap.add_argument("--lora-r", type=int, default=64)
    ap.add_argument("--lora-alpha", type=int, default=128)
    ap.add_argument("--lora-targets", default="q_proj,k_proj,v_proj")
    ap.add_argument("--device", default="cuda", help="cuda (cuda:N) or cpu")
    ap.add_argument("--matmul-n", type=int, default=8192, help="size of the bf16 matmul whose rate is measured (0: skip)")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()

    import torch

    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"error": "CUDA is not available"}))
        return 1
    if dev.type not in ("cuda", "cpu"):
        print(json.dumps({"error": f"--device {args.device}: want cuda, cuda:N or cpu"}))
        return 2
    # TF32 stays at PyTorch's defaults, which are libtorch's and so goclip's (cuBLAS off,
    # cuDNN on); under bf16 autocast the matrix work is bf16 either way.
    out = {"peer": "transformers CLIPModel + peft", "device": str(dev), "versions": common.versions(), "results": {}}
    rc = 0
    matmul = None
    if args.matmul_n > 0:
        try:
            matmul = out["matmul"] = matmul_rate(torch, dev, args.matmul_n)
        except Exception as e:  # recorded; the benchmarks still run
            out["matmul"] = {"error": f"{type(e).__name__}: {str(e)[:500]}"}
            rc = 1
        print(f"[peer] matmul: {json.dumps(out['matmul'])}", file=sys.stderr, flush=True)
    modes = ["lora", "full"] if args.mode == "both" else [args.mode]
    for mode in modes:
        try:
            out["results"][mode] = bench(mode, args, torch, matmul)
        except Exception as e:  # e.g. out of memory: recorded, the other mode still runs
            out["results"][mode] = {"error": f"{type(e).__name__}: {str(e)[:500]}"}
            rc = 1
            gc.collect()
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        print(f"[peer] {mode}: {json.dumps(out['results'][mode])}", file=sys.stderr, flush=True)
    text = json.dumps(out)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return rc


if __name__ == "__main__":
    sys.exit(main())
