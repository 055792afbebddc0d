"""Helpers shared by the GPU check's Python scripts (scripts/gpu/*.py) and the GPU peer
benchmark (bench/peer/gpu_hf_peft.py): the CLIP configurations both sides build, calling
bin/goclip, comparing arrays, and the FLOP counts behind MFU.

Run with the GPU machine's python3 (PyTorch, transformers, peft); never from the
repository root with `python3 -c`, where goclip's torch/ folder would shadow PyTorch.
"""

import json
import os
import subprocess
import time

import numpy as np

# ViT-B/16 forward FLOPs per image-text pair (DESIGN.md, Measuring): image and text tower.
VIT_B16_FWD_FLOPS = 35.13e9 + 5.96e9
# Training costs about 3x the forward pass; LoRA about 2x (no weight gradients for the
# frozen matrices).
TRAIN_FACTOR = {"full": 3.0, "lora": 2.0}
# Dense bf16 tensor-core peak by device name (vendor datasheets, SXM parts).
PEAK_BF16 = [("H200", 989.4e12), ("H100", 989.4e12), ("A100", 312e12), ("L40S", 362e12)]

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def peak_flops(device_name):
    for key, flops in PEAK_BF16:
        if key in device_name:
            return flops
    return None


def clip_config(name):
    """An HF CLIPConfig for one of goclip's presets: 'small' (the interop check's
    seconds-fast model), 'vit-b-16' (openai/clip-vit-base-patch16's architecture, legacy
    eos_token_id 2) or 'seed-scratch' (the same architecture pooling at token 49407)."""
    from transformers import CLIPConfig

    if name == "small":
        text = dict(vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                    num_attention_heads=4, max_position_embeddings=77,
                    bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
        vision = dict(image_size=32, patch_size=8, hidden_size=64, intermediate_size=256,
                      num_hidden_layers=2, num_attention_heads=4)
        proj = 32
    elif name in ("vit-b-16", "seed-scratch"):
        text = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                    num_attention_heads=8, max_position_embeddings=77)
        if name == "vit-b-16":
            text.update(bos_token_id=0, eos_token_id=2, pad_token_id=1)
        else:
            text.update(bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
        vision = dict(image_size=224, patch_size=16, hidden_size=768, intermediate_size=3072,
                      num_hidden_layers=12, num_attention_heads=12)
        proj = 512
    else:
        raise ValueError(f"unknown config {name}")
    for c in (text, vision):
        c.update(hidden_act="quick_gelu", projection_dim=proj)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=proj,
                      logit_scale_init_value=2.6592)


def build_clip(cfg, attn="sdpa"):
    """CLIPModel(cfg) with the given attention implementation, float32 parameters."""
    from transformers import CLIPModel

    try:
        return CLIPModel._from_config(cfg, attn_implementation=attn)
    except Exception:  # older or newer spelling
        cfg._attn_implementation = attn
        return CLIPModel(cfg)


def attn_impl(model):
    cfg = getattr(model, "config", None)
    return getattr(cfg, "_attn_implementation", None)


def pooled(out):
    p = getattr(out, "pooler_output", None)
    return p if p is not None else out[1]


def image_features(model, pixel_values):
    """Projected, unnormalised image embeddings (HF get_image_features), spelled out so
    that it does not depend on the return type of get_image_features across versions."""
    return model.visual_projection(pooled(model.vision_model(pixel_values=pixel_values)))


def text_features(model, input_ids):
    return model.text_projection(pooled(model.text_model(input_ids=input_ids)))


def preprocess_exact(paths):
    """CLIP pixel values of images already at the model's size (no resize or crop):
    /255, then CLIP's mean and std. Returns float32 (N, 3, S, S)."""
    from PIL import Image

    out = []
    for p in paths:
        a = np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0
        out.append(((a - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1))
    return np.stack(out).astype(np.float32)


def rel_err(got, want):
    """max |got - want| / max |want| (inf on a shape mismatch or NaN)."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return float("inf")
    num = float(np.max(np.abs(got - want))) if got.size else 0.0
    den = float(np.max(np.abs(want))) if want.size else 0.0
    if np.isnan(num):
        return float("inf")
    return num / den if den else num


def run(cmd, timeout, env=None, log=None, stdin=None):
    """Runs a command; returns (rc, seconds, stdout, stderr). Never raises on failure."""
    t0 = time.time()
    e = dict(os.environ)
    if env:
        e.update(env)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e, input=stdin)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as x:
        rc, out, err = 124, x.stdout or "", (x.stderr or "") + f"\ntimed out after {timeout}s"
        out = out.decode() if isinstance(out, bytes) else out
        err = err.decode() if isinstance(err, bytes) else err
    dt = time.time() - t0
    if log is not None:
        log.write(f"$ {' '.join(cmd)}\n# rc={rc} {dt:.1f}s\n{out[-4000:]}{err[-4000:]}\n")
        log.flush()
    return rc, dt, out, err


def last_json(text):
    """The last line of text that parses as a JSON object, or None."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def versions():
    import torch

    v = {"torch": torch.__version__, "cuda": torch.version.cuda}
    for mod in ("transformers", "peft", "numpy"):
        try:
            v[mod] = __import__(mod).__version__
        except Exception as e:  # recorded, not fatal
            v[mod] = f"missing: {e}"
    if torch.cuda.is_available():
        v["device"] = torch.cuda.get_device_name(0)
    return v
