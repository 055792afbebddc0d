#!/usr/bin/env python3
"""GPU peer of `goclip bench`: transformers' CLIPModel (+ peft LoRA) training steps.

Same work as `goclip bench`: random inputs already on the device (pixels [B, 3, 224, 224],
ids [B, 77] ending in the end token), forward with CLIP's symmetric contrastive loss
(return_loss=True), backward, torch.optim.AdamW (fused) step, zero_grad; bf16 autocast,
SDPA attention, float32 parameters.

  lora  ViT-B/16 (openai/clip-vit-base-patch16's architecture), peft LoRA r=64, alpha=128
        on q_proj/k_proj/v_proj of both towers (5,898,240 trainable parameters)
  full  every parameter trained (the study's from-scratch model, seed-scratch)

Prints one JSON object: per mode step_ms (median of per-step CUDA event times),
images_per_s, peak_memory_mb (torch.cuda.max_memory_allocated over the timed steps,
model and optimizer state included), mfu (DESIGN.md's FLOPs: 41.09 GFLOPs forward per
pair, x3 training, x2 LoRA, over the device's dense bf16 peak), trainable/total counts.

  python3 bench/peer/gpu_hf_peft.py --mode both --batch-size 256 --steps 30 --warmup 10
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


def bench(mode, args, torch):
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
    opt = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2,
                            fused=args.device.startswith("cuda"))

    b = args.batch_size
    g = torch.Generator(device=dev).manual_seed(0)
    pixels = torch.randn(b, 3, 224, 224, device=dev, generator=g)
    ids = torch.randint(1, 49406, (b, 77), device=dev, generator=g)
    ids[:, -1] = 49407
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[args.precision]

    def step():
        with torch.autocast(device_type=dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(input_ids=ids, pixel_values=pixels, return_loss=True).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    for _ in range(args.warmup):
        loss = step()
    torch.cuda.synchronize()
    warm_s = time.time() - t0
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(args.steps)]
    t0 = time.time()
    for start, end in events:
        start.record()
        loss = step()
        end.record()
    torch.cuda.synchronize()
    wall = time.time() - t0
    times = [s.elapsed_time(e) for s, e in events]
    step_ms = statistics.median(times)
    ips = b * 1000.0 / step_ms
    peak = common.peak_flops(torch.cuda.get_device_name(dev))
    flops = common.VIT_B16_FWD_FLOPS * common.TRAIN_FACTOR[mode]
    res = {
        "config": cfg_name, "batch_size": b, "steps": args.steps, "warmup": args.warmup,
        "precision": args.precision, "attn": attn, "fused_adamw": args.device.startswith("cuda"),
        "step_ms": round(step_ms, 3), "step_ms_mean": round(sum(times) / len(times), 3),
        "step_ms_min": round(min(times), 3), "wall_images_per_s": round(b * args.steps / wall, 1),
        "images_per_s": round(ips, 1),
        "peak_memory_mb": round(torch.cuda.max_memory_allocated(dev) / 2**20, 1),
        "mfu": round(ips * flops / peak, 4) if peak else None,
        "trainable": trainable, "total": total, "final_loss": float(loss.detach()),
        "warmup_s": round(warm_s, 1),
    }
    del model, opt, params, pixels, ids, loss
    gc.collect()
    torch.cuda.empty_cache()
    return res


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
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        print(json.dumps({"error": "CUDA is not available"}))
        return 1
    # TF32 stays at PyTorch's defaults, which are libtorch's and so goclip's (cuBLAS off,
    # cuDNN on); under bf16 autocast the matrix work is bf16 either way.
    out = {"peer": "transformers CLIPModel + peft", "versions": common.versions(), "results": {}}
    modes = ["lora", "full"] if args.mode == "both" else [args.mode]
    rc = 0
    for mode in modes:
        try:
            out["results"][mode] = bench(mode, args, torch)
        except Exception as e:  # e.g. out of memory: recorded, the other mode still runs
            out["results"][mode] = {"error": f"{type(e).__name__}: {str(e)[:500]}"}
            rc = 1
            gc.collect()
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
