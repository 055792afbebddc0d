#!/usr/bin/env python3
"""The reference side of goclip's interop tests (Go package goclip/interop).

Everything here is computed by the real libraries of the project's environment
(build/venv): transformers' CLIPModel, CLIPProcessor, CLIPTokenizer and image processors,
peft, torch.load, open_clip's SimpleTokenizer (OpenAI's simple_tokenizer.py). The Go tests
run this script with that python, with a temporary folder as the working directory (the
repository's torch/ folder must not shadow PyTorch), and compare what it writes with
goclip's output. Nothing is downloaded.

Subcommands:
  make-model    a randomly initialised CLIPModel for a config.json, written with
                save_pretrained, and a CLIPProcessor (CLIPTokenizer(vocab, merges) from a
                vocab.json/merges.txt folder, CLIPImageProcessor at the model's size)
                written with save_pretrained beside it
  make-adapter  a peft LoRA adapter (get_peft_model + LoraConfig) on a model folder,
                lora_B drawn non-zero, written with save_pretrained
  reference     embeddings, logits, loss and retrieval recall of a model folder as
                transformers computes them with CLIPProcessor, optionally with a peft
                adapter (PeftModel.from_pretrained) or with weights from torch.load of a
                .pt (load_state_dict strict); optionally peft's merge_and_unload, saved
  tokenize      CLIPTokenizer and open_clip's SimpleTokenizer ids for a JSONL of texts
  preprocess    CLIPImageProcessorPil and CLIPImageProcessor (torchvision) pixel values
                of images; writes JPEG variants of PNGs with PIL first when asked
"""

import argparse
import html
import json
import math
import os
import sys
import unicodedata

import numpy as np

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def quiet():
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def save_npy(path, a):
    """np.save of a C-ordered copy (a transposed tensor would be written in Fortran
    order, which the Go side does not read)."""
    np.save(path, np.ascontiguousarray(a))


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)


def read_merges(path):
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    return [tuple(line.split(" ")) for line in lines if line]


def clip_processor(tokenizer_dir, size):
    """CLIPProcessor of CLIPTokenizer(vocab, merges) from tokenizer_dir's vocab.json and
    merges.txt, and CLIPImageProcessor() (at 224; its size and crop at other sizes)."""
    from transformers import CLIPImageProcessor, CLIPProcessor, CLIPTokenizer

    with open(os.path.join(tokenizer_dir, "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    tok = CLIPTokenizer(vocab=vocab, merges=read_merges(os.path.join(tokenizer_dir, "merges.txt")))
    ip = CLIPImageProcessor() if size == 224 else CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return CLIPProcessor(image_processor=ip, tokenizer=tok)


def random_clip(cfg, seed):
    """CLIPModel(cfg) with every parameter drawn from a generator seeded with seed:
    matrices (linear, convolution, embedding tables) N(0, 1/fan_in), so that every
    layer moves the output and the image reaches the class token, other vectors
    (biases, class_embedding) N(0, 0.02²), LayerNorm weights N(1, 0.1²), logit_scale
    3.1. (CLIPModel's own initialisation leaves biases 0, LayerNorm weights 1 and
    logit_scale ln(1/0.07), where a mistake would not show; it is also slow at
    ViT-B/16's size, so it is skipped.)"""
    import torch
    from transformers import CLIPModel

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x
        from transformers.modeling_utils import no_init_weights
    with no_init_weights():
        model = CLIPModel(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith(".weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
        model.logit_scale.fill_(3.1)
    return model.eval()


def cmd_make_model(a):
    import torch
    from transformers import CLIPConfig

    quiet()
    cfg = CLIPConfig.from_json_file(a.config)
    model = random_clip(cfg, a.seed)
    model.save_pretrained(a.out)
    proc = clip_processor(a.tokenizer, cfg.vision_config.image_size)
    proc.save_pretrained(a.out)
    info = {"files": sorted(os.listdir(a.out)), "params": sum(p.numel() for p in model.parameters())}
    if a.bin_out:
        # transformers 4.x wrote pytorch_model.bin (torch.save of the state dict) for
        # safe_serialization=False; later releases may ignore the argument.
        model.save_pretrained(a.bin_out, safe_serialization=False)
        info["safe_serialization_false_files"] = sorted(os.listdir(a.bin_out))
        if not os.path.exists(os.path.join(a.bin_out, "pytorch_model.bin")):
            os.remove(os.path.join(a.bin_out, "model.safetensors"))
            torch.save(model.state_dict(), os.path.join(a.bin_out, "pytorch_model.bin"))
            info["bin_written_by"] = "torch.save(model.state_dict())"
        proc.save_pretrained(a.bin_out)
    print(json.dumps(info))


def cmd_make_adapter(a):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import CLIPModel

    quiet()
    model = CLIPModel.from_pretrained(a.model)
    targets = a.targets if a.regex else a.targets.split(",")
    cfg = LoraConfig(r=a.r, lora_alpha=a.alpha, target_modules=targets, lora_dropout=a.dropout,
                     use_rslora=a.rslora)
    pm = get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(a.seed)
    n = 0
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.copy_(a.b_std * torch.randn(p.shape, generator=g))
                n += 1
    pm.save_pretrained(a.out)
    trainable, total = pm.get_nb_trainable_parameters()
    print(json.dumps({"lora_B": n, "trainable": trainable, "total": total, "files": sorted(os.listdir(a.out))}))


def features(out):
    """get_*_features returns the projected tensor in transformers 4.x and a
    BaseModelOutputWithPooling whose pooler_output is that tensor in 5.x."""
    return out if not hasattr(out, "pooler_output") else out.pooler_output


def recall(img, txt, owner, ks=(1, 5, 10)):
    """DESIGN.md's retrieval recall: image-to-text R@k is the fraction of images with
    any of their captions among the k nearest captions; text-to-image R@k the fraction
    of captions whose image is among the k nearest images (cosine similarity)."""
    img = img / np.linalg.norm(img, axis=1, keepdims=True)
    txt = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    sim = img.astype(np.float64) @ txt.astype(np.float64).T  # [N, M]
    owner = np.asarray(owner)
    i2t, t2i = {}, {}
    order_t = np.argsort(-sim, axis=1, kind="stable")
    order_i = np.argsort(-sim.T, axis=1, kind="stable")
    for k in ks:
        i2t[f"R@{k}"] = float(np.mean([np.any(owner[order_t[i, :k]] == i) for i in range(sim.shape[0])]))
        t2i[f"R@{k}"] = float(np.mean([owner[j] in order_i[j, :k] for j in range(sim.shape[1])]))
    return i2t, t2i


def cmd_reference(a):
    import torch
    from PIL import Image
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    quiet()
    torch.set_grad_enabled(False)
    os.makedirs(a.out, exist_ok=True)
    info = {}
    if a.state_dict:
        sd = torch.load(a.state_dict)  # PyTorch 2.x defaults: weights_only=True
        info["state_dict_keys"] = len(sd)
        model = CLIPModel(CLIPConfig.from_pretrained(a.model))
        res = model.load_state_dict(sd, strict=True)
        info["missing"], info["unexpected"] = list(res.missing_keys), list(res.unexpected_keys)
    else:
        model = CLIPModel.from_pretrained(a.model)
    model.eval()
    base = model
    if a.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, a.adapter).eval()
        info["adapter_modules"] = sum(1 for n, _ in model.named_modules() if n.endswith(".lora_A"))
    tok_dir = a.processor or a.model
    procs = {b: CLIPProcessor.from_pretrained(tok_dir, backend=b) for b in a.backends.split(",")}
    info["image_processors"] = {b: type(p.image_processor).__name__ for b, p in procs.items()}
    tok = next(iter(procs.values())).tokenizer
    ctx = base.config.text_config.max_position_embeddings

    def text_inputs(texts):
        return tok(texts, padding="max_length", max_length=ctx, truncation=True, return_tensors="pt")

    def open_images(paths):
        return [Image.open(p) for p in paths]

    if a.images:
        paths = a.images.split(",")
        for b, p in procs.items():
            pv = p(images=open_images(paths), return_tensors="pt")["pixel_values"]
            save_npy(os.path.join(a.out, f"pixel_values_{b}.npy"), pv.numpy())
            save_npy(os.path.join(a.out, f"image_embeds_{b}.npy"), features(model.get_image_features(pixel_values=pv)).numpy())
    if a.texts:
        with open(a.texts, encoding="utf-8") as f:
            texts = f.read().split("\n")
        if texts and texts[-1] == "":
            texts.pop()
        t = text_inputs(texts)
        save_npy(os.path.join(a.out, "input_ids.npy"), t["input_ids"].numpy())
        save_npy(os.path.join(a.out, "text_embeds.npy"),
                features(model.get_text_features(input_ids=t["input_ids"], attention_mask=t["attention_mask"])).numpy())
    if a.eval:
        with open(a.eval) as f:
            items = json.load(f)  # [{"image": path, "captions": [...]}, ...]
        caps = [c for it in items for c in it["captions"]]
        owner = [i for i, it in enumerate(items) for _ in it["captions"]]
        first = text_inputs([it["captions"][0] for it in items])
        allcaps = text_inputs(caps)
        ev = {}
        for b, p in procs.items():
            pv = p(images=open_images([it["image"] for it in items]), return_tensors="pt")["pixel_values"]
            out = model(input_ids=first["input_ids"], attention_mask=first["attention_mask"], pixel_values=pv,
                        return_loss=True)
            save_npy(os.path.join(a.out, f"logits_per_image_{b}.npy"), out.logits_per_image.numpy())
            img = out.image_embeds.numpy()  # normalised, which recall's cosine does not mind
            if len(caps) == len(items):
                txt = out.text_embeds.numpy()
            else:
                txt = features(model.get_text_features(input_ids=allcaps["input_ids"],
                                                       attention_mask=allcaps["attention_mask"])).numpy()
            i2t, t2i = recall(img, txt, owner)
            ev[b] = {"loss": float(out.loss), "image_to_text": i2t, "text_to_image": t2i,
                     "images": len(items), "captions": len(caps)}
        write_json(os.path.join(a.out, "eval.json"), ev)
    if a.merged_out:
        merged = model.merge_and_unload()
        merged.save_pretrained(a.merged_out)
    write_json(os.path.join(a.out, "info.json"), info)
    print(json.dumps(info))


def openai_clean(text):
    """OpenAI's simple_tokenizer.py cleaning, its code (basic_clean, whitespace_clean,
    lower; the regex module's \\s) with ftfy.fix_text replaced by NFC, as in the
    fixtures: html.unescape twice, strip, white space runs to one space, lower case."""
    import regex

    text = unicodedata.normalize("NFC", text)
    text = html.unescape(html.unescape(text)).strip()
    return regex.sub(r"\s+", " ", text).strip().lower()


def cmd_tokenize(a):
    import ftfy
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    quiet()
    with open(os.path.join(a.vocab, "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    hf = CLIPTokenizer(vocab=vocab, merges=read_merges(os.path.join(a.vocab, "merges.txt")))
    oc = SimpleTokenizer(bpe_path=a.bpe)
    sot, eot = oc.sot_token_id, oc.eot_token_id
    with open(a.texts, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    with open(a.out, "w", encoding="utf-8") as out:
        for t in texts:
            fixed = ftfy.fix_text(t)
            row = {
                "hf": hf(t)["input_ids"],
                "hf_clean": hf(openai_clean(t))["input_ids"],
                "openclip": [sot] + oc.encode(t) + [eot],
                "ftfy": fixed,
                "ftfy_is_nfc": fixed == unicodedata.normalize("NFC", t),
            }
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


def cmd_preprocess(a):
    from PIL import Image
    from transformers import CLIPImageProcessor, CLIPImageProcessorPil

    quiet()
    os.makedirs(a.out, exist_ok=True)
    paths = a.images.split(",") if a.images else []
    if a.make_jpegs:
        os.makedirs(a.make_jpegs, exist_ok=True)
        src = a.jpeg_sources.split(",")
        variants = [("q95_444", dict(quality=95, subsampling=0)), ("q90_422", dict(quality=90, subsampling=1)),
                    ("q75_420", dict(quality=75, subsampling=2)), ("q50_420_progressive",
                                                                  dict(quality=50, subsampling=2, progressive=True))]
        for i, s in enumerate(src):
            im = Image.open(s).convert("RGB")
            stem = os.path.splitext(os.path.basename(s))[0]
            if i == 0:  # odd sizes: partial MCUs at the right and bottom edges
                im = im.crop((3, 5, 3 + 333, 5 + 251))
            for name, kw in variants:
                p = os.path.join(a.make_jpegs, f"{stem}_{name}.jpg")
                im.save(p, "JPEG", **kw)
                paths.append(p)
            p = os.path.join(a.make_jpegs, f"{stem}_grey.jpg")
            im.convert("L").save(p, "JPEG", quality=85)
            paths.append(p)
    size = a.size
    procs = {"pil": CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size}),
             "torchvision": CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})}
    names = []
    for i, p in enumerate(paths):
        im = Image.open(p)
        for b, proc in procs.items():
            pv = proc(images=im, return_tensors="np")["pixel_values"][0]  # [3, S, S]
            save_npy(os.path.join(a.out, f"{i}_{b}.npy"), pv.astype(np.float32))
        names.append(p)
    write_json(os.path.join(a.out, "images.json"), names)


def cmd_zeroshot(a):
    """Zero-shot accuracy as the CLIP paper computes it: per class, the mean of the
    normalised text features of its prompts, normalised; images classified by cosine."""
    import torch
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    quiet()
    torch.set_grad_enabled(False)
    model = CLIPModel.from_pretrained(a.model).eval()
    proc = CLIPProcessor.from_pretrained(a.model, backend="pil")
    ctx = model.config.text_config.max_position_embeddings
    with open(a.folder) as f:
        spec = json.load(f)  # {"classes": [...], "images": [[path, label], ...]}
    with open(a.templates, encoding="utf-8") as f:
        templates = [t.strip() for t in f if t.strip()]
    classes = spec["classes"]
    cls = []
    for c in classes:
        t = proc.tokenizer([tp.replace("{}", c) for tp in templates], padding="max_length", max_length=ctx,
                           truncation=True, return_tensors="pt")
        e = features(model.get_text_features(input_ids=t["input_ids"], attention_mask=t["attention_mask"]))
        e = e / e.norm(dim=-1, keepdim=True)
        m = e.mean(dim=0)
        cls.append(m / m.norm())
    cls = torch.stack(cls)  # [K, P]
    paths = [p for p, _ in spec["images"]]
    labels = torch.tensor([y for _, y in spec["images"]])
    pv = proc(images=[Image.open(p) for p in paths], return_tensors="pt")["pixel_values"]
    img = features(model.get_image_features(pixel_values=pv))
    img = img / img.norm(dim=-1, keepdim=True)
    scores = img @ cls.T  # [N, K]
    true = scores.gather(1, labels[:, None])
    above = (scores > true).sum(dim=1)
    gap = (scores - true).abs()
    gap[torch.arange(len(labels)), labels] = float("inf")
    per = {}
    for k, c in enumerate(classes):
        sel = labels == k
        n = int(sel.sum())
        per[c] = {"images": n, "top1": float((above[sel] < 1).float().mean()) if n else 0.0,
                  "top5": float((above[sel] < 5).float().mean()) if n else 0.0}
    res = {"top1": float((above < 1).float().mean()), "top5": float((above < 5).float().mean()),
           "classes": len(classes), "images": len(paths), "per_class": per, "min_gap": float(gap.min())}
    write_json(a.out, res)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("make-model")
    p.add_argument("--config", required=True)
    p.add_argument("--tokenizer", required=True, help="a folder with vocab.json and merges.txt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--bin-out", help="also write the model with safe_serialization=False here")
    p.set_defaults(fn=cmd_make_model)

    p = sub.add_parser("make-adapter")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--r", type=int, required=True)
    p.add_argument("--alpha", type=float, required=True)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--targets", required=True, help="comma-separated module names, or a regex with --regex")
    p.add_argument("--regex", action="store_true")
    p.add_argument("--rslora", action="store_true")
    p.add_argument("--b-std", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_make_adapter)

    p = sub.add_parser("reference")
    p.add_argument("--model", required=True, help="a CLIP folder (config.json; weights unless --state-dict)")
    p.add_argument("--processor", help="the folder to load CLIPProcessor from (default --model)")
    p.add_argument("--state-dict", help="a .pt to torch.load and load_state_dict(strict=True)")
    p.add_argument("--adapter")
    p.add_argument("--backends", default="pil", help="image processor backends, comma-separated: pil, torchvision")
    p.add_argument("--images", help="comma-separated image paths")
    p.add_argument("--texts", help="a file of texts, one per line")
    p.add_argument("--eval", help='a JSON list of {"image": path, "captions": [...]}')
    p.add_argument("--merged-out", help="write peft's merge_and_unload() here")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_reference)

    p = sub.add_parser("tokenize")
    p.add_argument("--vocab", required=True, help="a folder with vocab.json and merges.txt")
    p.add_argument("--bpe", required=True, help="bpe_simple_vocab_16e6.txt.gz")
    p.add_argument("--texts", required=True, help='JSONL of {"text": ...}')
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_tokenize)

    p = sub.add_parser("preprocess")
    p.add_argument("--images", default="")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--make-jpegs", help="write JPEG variants of --jpeg-sources here and add them to the images")
    p.add_argument("--jpeg-sources", default="")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_preprocess)

    p = sub.add_parser("zeroshot")
    p.add_argument("--model", required=True, help="a CLIP folder with its CLIPProcessor")
    p.add_argument("--folder", required=True, help='JSON {"classes": [...], "images": [[path, label], ...]}')
    p.add_argument("--templates", required=True, help="prompt templates, one per line with {}")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_zeroshot)

    a = ap.parse_args()
    a.fn(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
