"""Python PyTorch peer of `goclip bench`: an eager CLIP of goclip's architecture.

The model is a small hand-written nn.Module with Hugging Face CLIPModel's structure and
parameter names (separate q/k/v/out projections, pre-LN encoder layers, quick_gelu, the
class token / end-token pooling, projections without bias, logit_scale), built from an
HF config.json; transformers is not needed. The training step is goclip's: forward of
both towers, symmetric cross-entropy of exp(logit_scale)-scaled cosine logits, backward,
clip_grad_norm_(1.0), AdamW (betas 0.9/0.98, eps 1e-6, lr 5e-4, weight decay 0.1 on
weight matrices only) and the logit-scale clamp at ln(100).

    /usr/bin/python3 bench/peer/clip_eager.py --config CONFIG.json --mode train|embed \
        --batch-size 32 --steps 5 --warmup 1 --threads 2 [--profile]

prints one JSON object with the keys goclip bench --json uses.
"""
import argparse
import json
import math
import statistics
import time

import torch
from torch import nn
import torch.nn.functional as F

# transformers' CLIPConfig() defaults; a config.json overrides what it names.
TEXT_DEFAULTS = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                     num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu",
                     layer_norm_eps=1e-5, eos_token_id=49407)
VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       image_size=224, patch_size=32, num_channels=3, hidden_act="quick_gelu", layer_norm_eps=1e-5)
ACTS = {
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


def load_config(path):
    with open(path) as f:
        raw = json.load(f)
    text = dict(TEXT_DEFAULTS, **raw.get("text_config", {}))
    vision = dict(VISION_DEFAULTS, **raw.get("vision_config", {}))
    return text, vision, raw.get("projection_dim", 512), raw.get("logit_scale_init_value", 2.6592)


class Attention(nn.Module):
    """HF CLIPAttention (eager): q scaled, bmm, additive causal mask, softmax, bmm."""

    def __init__(self, d, heads):
        super().__init__()
        self.heads, self.head_dim = heads, d // heads
        self.scale = self.head_dim ** -0.5
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def _shape(self, x, b, t):
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2).contiguous()

    def forward(self, x, causal_mask=None):
        b, t, d = x.shape
        shape = (b * self.heads, -1, self.head_dim)
        q = self._shape(self.q_proj(x) * self.scale, b, t).view(*shape)
        k = self._shape(self.k_proj(x), b, t).view(*shape)
        v = self._shape(self.v_proj(x), b, t).view(*shape)
        w = torch.bmm(q, k.transpose(1, 2))  # [B*H, T, T]
        if causal_mask is not None:
            w = (w.view(b, self.heads, t, t) + causal_mask).view(b * self.heads, t, t)
        w = F.softmax(w, dim=-1)
        y = torch.bmm(w, v).view(b, self.heads, t, self.head_dim).transpose(1, 2).reshape(b, t, d)
        return self.out_proj(y)


class MLP(nn.Module):
    def __init__(self, d, i, act):
        super().__init__()
        self.act = ACTS[act]
        self.fc1, self.fc2 = nn.Linear(d, i), nn.Linear(i, d)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class EncoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"]
        self.self_attn = Attention(d, c["num_attention_heads"])
        self.layer_norm1 = nn.LayerNorm(d, eps=c["layer_norm_eps"])
        self.mlp = MLP(d, c["intermediate_size"], c["hidden_act"])
        self.layer_norm2 = nn.LayerNorm(d, eps=c["layer_norm_eps"])

    def forward(self, x, causal_mask=None):
        x = x + self.self_attn(self.layer_norm1(x), causal_mask)
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(c) for _ in range(c["num_hidden_layers"]))

    def forward(self, x, causal_mask=None):
        for layer in self.layers:
            x = layer(x, causal_mask)
        return x


class VisionEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, p = c["hidden_size"], c["patch_size"]
        n = (c["image_size"] // p) ** 2 + 1
        self.class_embedding = nn.Parameter(torch.randn(d) * d ** -0.5)
        self.patch_embedding = nn.Conv2d(c["num_channels"], d, p, stride=p, bias=False)
        self.position_embedding = nn.Embedding(n, d)
        self.register_buffer("position_ids", torch.arange(n).unsqueeze(0), persistent=False)

    def forward(self, pixels):
        b = pixels.shape[0]
        patches = self.patch_embedding(pixels).flatten(2).transpose(1, 2)  # [B, N, D]
        cls = self.class_embedding.expand(b, 1, -1)
        return torch.cat([cls, patches], dim=1) + self.position_embedding(self.position_ids)


class VisionTransformer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, eps = c["hidden_size"], c["layer_norm_eps"]
        self.embeddings = VisionEmbeddings(c)
        self.pre_layrnorm = nn.LayerNorm(d, eps=eps)
        self.encoder = Encoder(c)
        self.post_layernorm = nn.LayerNorm(d, eps=eps)

    def forward(self, pixels):
        h = self.encoder(self.pre_layrnorm(self.embeddings(pixels)))
        return self.post_layernorm(h[:, 0, :])


class TextEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.token_embedding = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.position_embedding = nn.Embedding(c["max_position_embeddings"], c["hidden_size"])
        self.register_buffer("position_ids", torch.arange(c["max_position_embeddings"]).unsqueeze(0),
                             persistent=False)

    def forward(self, ids):
        return self.token_embedding(ids) + self.position_embedding(self.position_ids[:, :ids.shape[1]])


class TextTransformer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.eos = c["eos_token_id"]
        self.embeddings = TextEmbeddings(c)
        self.encoder = Encoder(c)
        self.final_layer_norm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])

    def forward(self, ids):
        b, t = ids.shape
        h = self.embeddings(ids)
        mask = torch.full((b, t, t), torch.finfo(h.dtype).min, dtype=h.dtype).triu_(1).unsqueeze(1)
        h = self.final_layer_norm(self.encoder(h, mask))  # HF normalises every position
        if self.eos == 2:  # legacy OpenAI configs: the end token is the largest id
            at = ids.argmax(dim=-1)
        else:
            at = (ids == self.eos).int().argmax(dim=-1)
        return h[torch.arange(b), at]


class CLIP(nn.Module):
    def __init__(self, text, vision, proj, logit_scale):
        super().__init__()
        self.vision_model = VisionTransformer(vision)
        self.text_model = TextTransformer(text)
        self.visual_projection = nn.Linear(vision["hidden_size"], proj, bias=False)
        self.text_projection = nn.Linear(text["hidden_size"], proj, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)))

    def encode_image(self, pixels):
        return self.visual_projection(self.vision_model(pixels))

    def encode_text(self, ids):
        return self.text_projection(self.text_model(ids))

    def forward(self, pixels, ids):
        img = self.encode_image(pixels)
        txt = self.encode_text(ids)
        img = img / img.norm(p=2, dim=-1, keepdim=True)
        txt = txt / txt.norm(p=2, dim=-1, keepdim=True)
        return img @ txt.t() * self.logit_scale.exp()  # logits_per_image [B, B]


def contrastive_loss(logits):
    target = torch.arange(logits.shape[0])
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def decays(name, p):
    """goclip's train.Decays: weight matrices decay; biases, norms, embeddings, logit_scale not."""
    if p.dim() < 2 or name == "logit_scale" or name.endswith(".bias"):
        return False
    return not name.endswith(("position_embedding.weight", "token_embedding.weight", "class_embedding"))


def peak_rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True, help="an HF CLIP config.json")
    ap.add_argument("--mode", choices=["train", "embed"], default="train")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", action="store_true", help="also profile one step; table to stderr")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    text, vision, proj, ls = load_config(args.config)
    model = CLIP(text, vision, proj, ls)
    b, s, t = args.batch_size, vision["image_size"], text["max_position_embeddings"]
    pixels = torch.randn(b, vision["num_channels"], s, s)
    ids = torch.randint(0, text["vocab_size"], (b, t))
    res = dict(mode=args.mode, threads=torch.get_num_threads(), batch_size=b, steps=args.steps,
               torch=torch.__version__, params=sum(p.numel() for p in model.parameters()))

    if args.mode == "embed":
        model.eval()

        def step():
            with torch.no_grad():
                t0 = time.perf_counter()
                model.encode_image(pixels)
                t1 = time.perf_counter()
                model.encode_text(ids)
                t2 = time.perf_counter()
            return (t1 - t0) * 1e3, (t2 - t1) * 1e3
    else:
        model.train()
        named = list(model.named_parameters())
        groups = [{"params": [p for n, p in named if decays(n, p)], "weight_decay": 0.1},
                  {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, lr=5e-4, betas=(0.9, 0.98), eps=1e-6)
        params = [p for _, p in named]
        max_logit_scale = math.log(100)

        def step():
            t0 = time.perf_counter()
            loss = contrastive_loss(model(pixels, ids))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                model.logit_scale.clamp_(max=max_logit_scale)
            res["loss"] = loss.item()
            return ((time.perf_counter() - t0) * 1e3,)

    times = []
    for i in range(args.warmup + args.steps):
        r = step()
        if i >= args.warmup:
            times.append(r)
    if args.mode == "embed":
        img = [r[0] for r in times]
        txt = [r[1] for r in times]
        res.update(image_ms=statistics.median(img), text_ms=statistics.median(txt),
                   step_ms=statistics.median([a + c for a, c in zip(img, txt)]))
        res["images_per_s"] = b * 1e3 / res["image_ms"]
        res["texts_per_s"] = b * 1e3 / res["text_ms"]
    else:
        ms = [r[0] for r in times]
        res.update(step_ms=statistics.median(ms), step_ms_mean=statistics.fmean(ms))
        res["images_per_s"] = b * 1e3 / res["step_ms"]
    res.update(peak_memory_mb=peak_rss_mb(), memory_kind="cpu_peak_rss_vmhwm")

    if args.profile:
        import sys
        with torch.autograd.profiler.profile() as prof:
            step()
        events = prof.key_averages()
        top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:25]
        res["profile_op_calls"] = sum(e.count for e in events)
        print(f"{'op':<40} {'calls':>6} {'self ms':>9}", file=sys.stderr)
        for e in top:
            print(f"{e.key:<40} {e.count:>6} {e.self_cpu_time_total / 1e3:>9.1f}", file=sys.stderr)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
