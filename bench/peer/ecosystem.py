"""CPU peers of `goclip bench` from the libraries users train CLIP with.

    build/venv/bin/python bench/peer/ecosystem.py --lib transformers|peft|open_clip \
        --mode train|embed --config CONFIG.json --batch-size 32 --steps 3 --warmup 1 --threads 2

  transformers  CLIPModel(CLIPConfig.from_json_file(CONFIG)), SDPA attention, every
                parameter trained (the full training step)
  peft          the same CLIPModel with peft LoRA (--lora-r, --lora-alpha, --lora-targets;
                default r=64, alpha=128 on q_proj/k_proj/v_proj), only the adapter trained
  open_clip     open_clip.model.CLIP with the same sizes (width, layers, heads, MLP ratio,
                patch and image size, context length, vocabulary, projection, QuickGELU
                when the config says quick_gelu)

The step is goclip bench's: random inputs already in memory (pixels [B, 3, S, S], ids
[B, T] ending in the end token), forward of both towers, CLIP's symmetric contrastive loss,
backward, clip_grad_norm_(1.0), torch.optim.AdamW (betas 0.9/0.98, eps 1e-6, lr 5e-4,
weight decay 0.1 on matrices only), zero_grad, logit-scale clamp at ln(100). fp32.
--mode embed times image and text feature batches (eval, no grad) instead.

Prints one JSON object with goclip bench --json's keys (step_ms: median over the timed
steps; peak_memory_mb: the process's peak RSS, model build included).
"""
import argparse
import json
import math
import resource
import statistics
import time

import torch
import torch.nn.functional as F


def build_hf(cfg_path, lib, args):
    from transformers import CLIPConfig, CLIPModel

    cfg = CLIPConfig.from_json_file(cfg_path)
    cfg._attn_implementation = "sdpa"
    model = CLIPModel(cfg)
    if lib == "peft":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.0,
                                                 target_modules=args.lora_targets.split(",")))
    tc, vc = cfg.text_config, cfg.vision_config

    def encode(pixels, ids):
        base = model.base_model.model if lib == "peft" else model
        img = base.get_image_features(pixel_values=pixels)
        txt = base.get_text_features(input_ids=ids)
        if not torch.is_tensor(img):  # transformers 5 may return an output object
            img, txt = img.pooler_output, txt.pooler_output
        return img, txt, base.logit_scale

    shape = dict(image_size=vc.image_size, context=tc.max_position_embeddings, vocab=tc.vocab_size)
    return model, encode, shape


def build_open_clip(cfg_path):
    from open_clip.model import CLIP

    raw = json.load(open(cfg_path))
    t, v = raw.get("text_config", {}), raw.get("vision_config", {})
    # transformers' CLIPConfig defaults where the file is silent
    tw, vw = t.get("hidden_size", 512), v.get("hidden_size", 768)
    vision_cfg = dict(image_size=v.get("image_size", 224), patch_size=v.get("patch_size", 32), width=vw,
                      layers=v.get("num_hidden_layers", 12),
                      head_width=vw // v.get("num_attention_heads", 12),
                      mlp_ratio=v.get("intermediate_size", 3072) / vw)
    text_cfg = dict(context_length=t.get("max_position_embeddings", 77), vocab_size=t.get("vocab_size", 49408),
                    width=tw, heads=t.get("num_attention_heads", 8), layers=t.get("num_hidden_layers", 12),
                    mlp_ratio=t.get("intermediate_size", 2048) / tw)
    quick = v.get("hidden_act", "quick_gelu") == "quick_gelu"
    model = CLIP(embed_dim=raw.get("projection_dim", 512), vision_cfg=vision_cfg, text_cfg=text_cfg,
                 quick_gelu=quick)

    def encode(pixels, ids):
        return model.encode_image(pixels), model.encode_text(ids), model.logit_scale

    shape = dict(image_size=vision_cfg["image_size"], context=text_cfg["context_length"],
                 vocab=text_cfg["vocab_size"])
    return model, encode, shape


def clip_loss(img, txt, logit_scale):
    img = F.normalize(img, dim=-1)
    txt = F.normalize(txt, dim=-1)
    logits = logit_scale.exp() * img @ txt.t()  # [B, B]
    labels = torch.arange(logits.shape[0])
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", choices=["transformers", "peft", "open_clip"], required=True)
    ap.add_argument("--mode", choices=["train", "embed"], default="train")
    ap.add_argument("--config", required=True, help="an HF CLIP config.json")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lora-r", type=int, default=64)
    ap.add_argument("--lora-alpha", type=int, default=128)
    ap.add_argument("--lora-targets", default="q_proj,k_proj,v_proj")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    if args.lib == "open_clip":
        model, encode, shape = build_open_clip(args.config)
    else:
        model, encode, shape = build_hf(args.config, args.lib, args)
    total = sum(p.numel() for p in model.parameters())
    b = args.batch_size
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(b, 3, shape["image_size"], shape["image_size"], generator=g)
    ids = torch.randint(1, shape["vocab"] - 2, (b, shape["context"]), generator=g)
    ids[:, -1] = shape["vocab"] - 1  # the end token: the highest id, as in CLIP's vocabulary
    res = {"lib": args.lib, "mode": args.mode, "config": args.config, "batch_size": b, "threads": args.threads,
           "torch": torch.__version__, "params": total}

    if args.mode == "embed":
        model.eval()
        with torch.no_grad():
            def image():
                return encode(pixels, ids[:1])[0]

            def text():
                return encode(pixels[:1], ids)[1]

            for name, fn in [("image_ms", image), ("text_ms", text)]:
                for _ in range(args.warmup):
                    fn()
                times = []
                for _ in range(args.steps):
                    t0 = time.perf_counter()
                    fn()
                    times.append((time.perf_counter() - t0) * 1e3)
                res[name] = statistics.median(times)
    else:
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        other = [p for p in params if p.ndim < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                                lr=5e-4, betas=(0.9, 0.98), eps=1e-6)
        res["trainable"] = sum(p.numel() for p in params)

        def step():
            img, txt, scale = encode(pixels, ids)
            loss = clip_loss(img, txt, scale)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                scale.clamp_(max=math.log(100.0))
            return loss

        for _ in range(args.warmup):
            step()
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            loss = step()
            times.append((time.perf_counter() - t0) * 1e3)
        res["step_ms"] = statistics.median(times)
        res["images_per_s"] = b * 1e3 / res["step_ms"]
        res["final_loss"] = loss.item()
    res["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(res))


if __name__ == "__main__":
    main()
