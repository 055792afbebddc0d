"""Inputs of train/equivalence_test.go, written with transformers and peft.

Writes under --out:
  base/     a randomly initialised transformers CLIPModel (small config; biases and
            LayerNorm weights perturbed from 0 and 1) saved with save_pretrained
            (safetensors), with the tokenizer files of --vocab
  adapter/  get_peft_model(base, LoraConfig(r, lora_alpha, q/k/v, lora_dropout=0)) with
            lora_B drawn from N(0, --b-std) (peft starts it at zero), saved with
            save_pretrained
  data/     a Karpathy-layout data set (dataset_flickr30k.json, every image in the train
            split, one caption each) of --images PNG images of side --size in images/

Run with the working directory outside the repository (its torch/ folder would shadow
the torch package).
"""

import argparse
import json
import os
import shutil

import numpy as np
import torch
from PIL import Image
from peft import LoraConfig, get_peft_model
from transformers import CLIPConfig, CLIPModel

CAPTIONS = [
    "a red square on a blue field",
    "two dogs run across the grass",
    "a small boat on a calm lake",
    "an old man reads a newspaper",
    "a green bird sits on a branch",
    "children play football in the park",
    "a bowl of soup on a wooden table",
    "a city street at night with lights",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--vocab", required=True, help="folder with vocab.json and merges.txt")
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--context", type=int, default=16)
    ap.add_argument("--r", type=int, default=4)
    ap.add_argument("--alpha", type=float, default=8)
    ap.add_argument("--b-std", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.images > len(CAPTIONS):
        raise SystemExit(f"at most {len(CAPTIONS)} images")

    torch.manual_seed(a.seed)
    width, proj = 32, 16
    cfg = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=width, intermediate_size=2 * width,
                         num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=a.context, projection_dim=proj),
        vision_config=dict(image_size=a.size, patch_size=8, hidden_size=width,
                           intermediate_size=2 * width, num_hidden_layers=2,
                           num_attention_heads=2, projection_dim=proj),
        projection_dim=proj,
    )
    model = CLIPModel(cfg).eval()
    # transformers initialises biases to 0 and LayerNorm weights to 1; a trained model's
    # are not, and relative errors of tensors that start at 0 measure only the update.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0, 0.05)
            elif "norm" in name or "layrnorm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    base = os.path.join(a.out, "base")
    model.save_pretrained(base)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(a.vocab, f), os.path.join(base, f))

    lcfg = LoraConfig(r=a.r, lora_alpha=a.alpha, target_modules=["q_proj", "k_proj", "v_proj"],
                      lora_dropout=0.0)
    pm = get_peft_model(CLIPModel.from_pretrained(base), lcfg)
    g = torch.Generator().manual_seed(a.seed + 1)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=g) * a.b_std)
    pm.save_pretrained(os.path.join(a.out, "adapter"))

    data = os.path.join(a.out, "data")
    os.makedirs(os.path.join(data, "images"))
    rng = np.random.default_rng(a.seed)
    entries = []
    for i in range(a.images):
        name = f"img{i}.png"
        # a smooth random image: a coarse grid of colours, upsampled, plus noise
        coarse = rng.integers(0, 256, size=(4, 4, 3)).astype(np.float64)
        img = np.kron(coarse, np.ones((a.size // 4 + 1, a.size // 4 + 1, 1)))[: a.size, : a.size]
        img = np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img, "RGB").save(os.path.join(data, "images", name))
        entries.append({"filename": name, "split": "train", "sentences": [{"raw": CAPTIONS[i]}]})
    with open(os.path.join(data, "dataset_flickr30k.json"), "w") as f:
        json.dump({"images": entries}, f, indent=1)


if __name__ == "__main__":
    main()
