#!/usr/bin/env python3
"""Interop checks of goclip against the real transformers and peft (scripts/gpu-check.sh).

  1. models: CLIPModel with random weights for a small config and ViT-B/16's, written
     with save_pretrained (plus the OpenAI tokenizer files from the fixtures), and test
     images at each model's exact size (no resize, so preprocessing is only /255 and
     CLIP's mean/std) and captions.
  2. embed-<model>-<device>: `goclip embed` (images and texts) equals transformers'
     projected features in float32 within 1e-4 (max |goclip - hf| / max |hf|; TF32 off).
  3. peft-adapter-<model>: a peft LoRA adapter (q/k/v, lora_B drawn non-zero) saved with
     save_pretrained gives equal outputs in `goclip embed --adapter`.
  4. goclip-adapter: the adapter of a short `goclip finetune` loads with
     PeftModel.from_pretrained and gives goclip's outputs; its model.pt loads with
     CLIPModel.load_state_dict(strict=True) and gives the same outputs.

--device: cuda (the GPU check) compares on the CPU and on CUDA and fails when CUDA is not
available; cpu only on the CPU (CI: `--device cpu --models small`, cmd/goclip's
gpu_python_test.go); auto, CUDA when available.

Writes one JSON object (--out) with a result per check; a failing check is recorded and
the others still run. The models stay in --work for the end-to-end fine-tune.
"""

import argparse
import json
import os
import shutil
import sys
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

TOL = 1e-4
TEXTS = [
    "a photo of a cat.",
    "Two dogs run across the grass .",
    "A man in a red jacket is climbing a rock wall",
    "an empty street at night, lit by neon signs",
    "a bowl of fruit on a wooden table",
]


class Checker:
    def __init__(self, out_path, log):
        self.out_path = out_path
        self.log = log
        self.results = {"checks": {}, "tolerance": TOL}

    def check(self, name, fn, *a, **kw):
        t0 = time.time()
        try:
            r = fn(*a, **kw) or {}
            r.setdefault("ok", True)
        except Exception as e:
            r = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
        r["seconds"] = round(time.time() - t0, 1)
        self.results["checks"][name] = r
        status = "ok" if r["ok"] else "FAIL"
        print(f"[interop] {name}: {status} {json.dumps({k: v for k, v in r.items() if k != 'traceback'})[:600]}", flush=True)
        self.save()
        return r

    def save(self):
        with open(self.out_path, "w") as f:
            json.dump(self.results, f, indent=1, default=str)


def goclip(args, cmd, timeout=120, log=None):
    rc, dt, out, err = common.run([args.goclip] + cmd, timeout, log=log)
    if rc != 0:
        raise RuntimeError(f"goclip {' '.join(cmd[:1])} exited {rc}: {err.strip()[-1500:]}")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--goclip", default="bin/goclip")
    ap.add_argument("--work", required=True)
    ap.add_argument("--fixtures", default="build/gpu-fixtures")
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default="small,vit-b-16", help="comma-separated: small, vit-b-16")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                    help="cuda: CPU and CUDA, failing without CUDA; cpu: the CPU only")
    ap.add_argument("--models-only", action="store_true", help="write the model folders and stop")
    args = ap.parse_args()
    args.goclip = os.path.abspath(args.goclip)
    os.makedirs(args.work, exist_ok=True)

    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_grad_enabled(False)
    cuda = torch.cuda.is_available() and args.device != "cpu"
    devices = ["cpu"] + (["cuda"] if cuda else [])
    log = open(os.path.join(args.work, "interop-commands.log"), "a")
    ck = Checker(args.out, log)
    ck.results["versions"] = common.versions()
    ck.results["devices"] = devices
    if args.device == "cuda" and not cuda:
        ck.check("cuda-available", lambda: {"ok": False, "error": "--device cuda: torch.cuda.is_available() is False"})
    for name in args.models.split(","):
        if name and name not in ("small", "vit-b-16"):
            print(f"interop: --models {args.models}: unknown model {name} (want small, vit-b-16)", file=sys.stderr)
            return 2

    tok_src = os.path.join(args.fixtures, "clip-tiny-openai")
    have_tok = all(os.path.exists(os.path.join(tok_src, f)) for f in ("vocab.json", "merges.txt"))
    texts_path = os.path.join(args.work, "texts.txt")
    with open(texts_path, "w") as f:
        f.write("\n".join(TEXTS) + "\n")

    models, images = {}, {}

    def make_model(name):
        cfg = common.clip_config(name)
        torch.manual_seed(0)
        m = common.build_clip(cfg, "sdpa").eval()
        d = os.path.join(args.work, "models", name)
        shutil.rmtree(d, ignore_errors=True)
        m.save_pretrained(d)
        if have_tok:
            for f in ("vocab.json", "merges.txt"):
                shutil.copy(os.path.join(tok_src, f), d)
        size = cfg.vision_config.image_size
        idir = os.path.join(args.work, f"images_{size}")
        if not os.path.isdir(idir):
            from PIL import Image

            os.makedirs(idir)
            rng = np.random.default_rng(size)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(os.path.join(idir, f"img{i}.png"))
        models[name] = (m, d, cfg)
        images[name] = sorted(os.path.join(idir, p) for p in os.listdir(idir))
        return {"dir": d, "files": sorted(os.listdir(d)), "attn": common.attn_impl(m),
                "params": sum(p.numel() for p in m.parameters()), "tokenizer_files": have_tok}

    names = [n for n in args.models.split(",") if n]
    for name in names:
        ck.check(f"model-{name}", make_model, name)
    if args.models_only:
        ck.save()
        return 0 if all(r.get("ok") for r in ck.results["checks"].values()) else 1

    ids_cache = {}

    def tokenize(name):
        d = models[name][1]
        with open(texts_path) as f:
            rc, _, out, err = common.run([args.goclip, "tokenize", "--vocab", d], 60, log=log, stdin=f.read())
        if rc != 0:
            raise RuntimeError(f"goclip tokenize exited {rc}: {err.strip()[-800:]}")
        rows = [json.loads(line) for line in out.strip().splitlines()]
        ids = np.zeros((len(rows), 77), dtype=np.int64)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = r
        res = {"lengths": [len(r) for r in rows]}
        try:  # transformers' own tokenizer, for information
            from transformers import CLIPTokenizer

            hf = CLIPTokenizer.from_pretrained(d)(TEXTS)["input_ids"]
            res["hf_tokenizer_equal"] = [list(a) for a in hf] == rows
        except Exception as e:
            res["hf_tokenizer_equal"] = f"not checked: {type(e).__name__}: {e}"
        ids_cache[name] = ids
        return res

    def reference(model, name, dev):
        model.to(dev)
        pv = torch.from_numpy(common.preprocess_exact(images[name])).to(dev)
        img = common.image_features(model, pv).float().cpu().numpy()
        txt = None
        if name in ids_cache:
            txt = common.text_features(model, torch.from_numpy(ids_cache[name]).to(dev)).float().cpu().numpy()
        model.to("cpu")
        return img, txt

    def goclip_embed(d, name, dev, tag, adapter=None):
        extra = ["--adapter", adapter] if adapter else []
        base = ["embed", "--model", d, "--device", dev, "--precision", "fp32"] + extra
        img_out = os.path.join(args.work, f"{tag}-img.npy")
        goclip(args, base + ["--images", ",".join(images[name]), "--out", img_out], log=log)
        txt = None
        if name in ids_cache:
            txt_out = os.path.join(args.work, f"{tag}-txt.npy")
            goclip(args, base + ["--texts", texts_path, "--out", txt_out], log=log)
            txt = np.load(txt_out)
        return np.load(img_out), txt

    def compare(ref, got):
        r = {"image_rel_err": common.rel_err(got[0], ref[0])}
        if ref[1] is not None and got[1] is not None:
            r["text_rel_err"] = common.rel_err(got[1], ref[1])
        else:
            r["text"] = "skipped: no tokenizer files (fixtures not carried)"
        r["ok"] = all(v <= TOL for k, v in r.items() if k.endswith("rel_err"))
        return r

    def embed_check(name, dev):
        m, d, _ = models[name]
        ref = reference(m, name, dev)
        got = goclip_embed(d, name, dev, f"embed-{name}-{dev}")
        return compare(ref, got)

    for name in names:
        if name not in models:
            continue
        if have_tok:
            ck.check(f"tokenize-{name}", tokenize, name)
        for dev in devices:
            ck.check(f"embed-{name}-{dev}", embed_check, name, dev)

    dev = devices[-1]

    def peft_adapter(name, r, alpha):
        from peft import LoraConfig, get_peft_model
        from transformers import CLIPModel

        m, d, _ = models[name]
        base = CLIPModel.from_pretrained(d).eval()
        pm = get_peft_model(base, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0,
                                             target_modules=["q_proj", "k_proj", "v_proj"]))
        torch.manual_seed(1)
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.data.normal_(0.0, 0.02)
        pm.eval()
        a = os.path.join(args.work, "adapters", f"peft-{name}")
        shutil.rmtree(a, ignore_errors=True)
        pm.save_pretrained(a)
        inner = pm.base_model.model
        ref = reference(inner, name, dev)
        plain = reference(m, name, dev)
        got = goclip_embed(d, name, dev, f"peft-{name}", adapter=a)
        res = compare(ref, got)
        res["adapter_effect"] = common.rel_err(ref[0], plain[0])  # how far LoRA moves the output
        res["adapter_files"] = sorted(os.listdir(a))
        if res["adapter_effect"] < 1e-3:
            res["ok"] = False
            res["error"] = "the adapter barely changes the output: the comparison proves nothing"
        return res

    for name, r, alpha in (("small", 8, 16), ("vit-b-16", 64, 128)):
        if name in models:
            ck.check(f"peft-adapter-{name}", peft_adapter, name, r, alpha)

    def goclip_adapter():
        from peft import PeftModel
        from safetensors.torch import load_file
        from transformers import CLIPModel

        name = "small"
        m, d, cfg = models[name]
        if not have_tok:
            raise RuntimeError("no tokenizer files: goclip finetune needs vocab.json and merges.txt")
        data = os.path.join(args.work, "synth32")
        if not os.path.isdir(data):
            goclip(args, ["synth", "--out", data, "--images", "64", "--size", "32", "--seed", "1"], log=log)
        run = os.path.join(args.work, "ft-small")
        shutil.rmtree(run, ignore_errors=True)
        goclip(args, ["finetune", "--model", d, "--data", data, "--out", run, "--lora-r", "8", "--lora-alpha", "16",
                      "--lora-targets", "q_proj,k_proj,v_proj", "--batch-size", "16", "--max-steps", "4",
                      # a learning rate at which 4 steps move the output measurably
                      "--lr", "1e-2", "--warmup", "0", "--schedule", "constant", "--log-every", "1", "--device", dev, "--precision", "fp32", "--seed", "1"], timeout=180, log=log)
        res = {"run_files": sorted(os.listdir(run))}
        adir = os.path.join(run, "adapter")
        sd = load_file(os.path.join(adir, "adapter_model.safetensors"))
        res["adapter_keys"] = len(sd)
        res["example_key"] = sorted(sd)[0] if sd else None
        res["max_abs_lora_B"] = max((float(v.abs().max()) for k, v in sd.items() if "lora_B" in k), default=0.0)
        if res["max_abs_lora_B"] == 0.0:
            raise RuntimeError("goclip's adapter has lora_B all zero after training")

        base = CLIPModel.from_pretrained(d).eval()
        pm = PeftModel.from_pretrained(base, adir).eval()
        ref = reference(pm.base_model.model, name, dev)
        got = goclip_embed(d, name, dev, "goclip-adapter", adapter=adir)
        cmp = compare(ref, got)
        res.update({"peft_" + k: v for k, v in cmp.items() if k != "ok"})
        res["adapter_effect"] = common.rel_err(ref[0], reference(m, name, dev)[0])
        ok = cmp["ok"]
        if res["adapter_effect"] < 1e-3:
            ok = False
            res["error"] = "the trained adapter barely changes the output: the comparison proves nothing"

        # model.pt: the merged state dict, HF keys, torch.load(weights_only=True)
        pt = torch.load(os.path.join(run, "model.pt"), map_location="cpu", weights_only=True)
        res["model_pt_keys"] = len(pt)
        res["model_pt_dtypes"] = sorted({str(v.dtype) for v in pt.values()})
        m2 = common.build_clip(common.clip_config(name), "sdpa").eval()
        m2.load_state_dict(pt, strict=True)
        res["model_pt_strict_load"] = True
        merged = reference(m2, name, dev)
        res["model_pt_vs_peft_rel_err"] = common.rel_err(merged[0], ref[0])
        if merged[1] is not None:
            res["model_pt_vs_peft_text_rel_err"] = common.rel_err(merged[1], ref[1])
        ok = ok and res["model_pt_vs_peft_rel_err"] <= TOL and res.get("model_pt_vs_peft_text_rel_err", 0) <= TOL
        mdir = os.path.join(run, "model")
        if os.path.isdir(mdir):
            got2 = goclip_embed(mdir, name, dev, "goclip-merged")
            res["merged_folder_rel_err"] = common.rel_err(got2[0], ref[0])
            ok = ok and res["merged_folder_rel_err"] <= TOL
        res["ok"] = ok
        return res

    if "small" in models:
        ck.check("goclip-adapter", goclip_adapter)

    ok = all(r.get("ok") for r in ck.results["checks"].values())
    ck.results["ok"] = ok
    ck.save()
    print(f"[interop] {'all checks passed' if ok else 'some checks FAILED'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
