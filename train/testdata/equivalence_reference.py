"""The reference side of train/equivalence_test.go: the same training steps as goclip's
loop, written with transformers' CLIPModel, peft and torch.optim.AdamW.

Each step takes the batch that --orders names (a JSON list, one list of image file names
per step), tokenises the captions with CLIPTokenizer (padded to the batch's longest caption,
as goclip's text tower runs: clip.Model.TextIDs) and
preprocesses the images with CLIPImageProcessor, computes CLIPModel's own loss
(return_loss=True: the mean of the image->text and text->image cross-entropies), runs
backward, clips the total gradient 2-norm with torch.nn.utils.clip_grad_norm_, steps
AdamW and clamps logit_scale to at most ln(100), as goclip's train/step.go does.

AdamW has two parameter groups as goclip's train/groups.go: weight decay on parameters of
two or more dimensions except the position, token and class embeddings (weight matrices,
the patch convolution, LoRA's A and B); none on biases, LayerNorm weights, those
embeddings and logit_scale.

--adapter DIR: a LoRA run, PeftModel.from_pretrained(base, DIR, is_trainable=True), the
adapter trained and saved with save_pretrained to OUT/adapter. Without it, a full
fine-tune of every parameter, the state dict saved to OUT/model.safetensors. Per-step
losses and gradient norms (before clipping) go to OUT/steps.json.
"""

import argparse
import json
import math
import os

import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

NO_DECAY_SUFFIXES = ("position_embedding.weight", "token_embedding.weight", "class_embedding")


def decays(name, p):
    """goclip's train.Decays: weight decay on weight matrices only."""
    if p.dim() < 2 or name == "logit_scale" or name.endswith(".bias"):
        return False
    return not name.endswith(NO_DECAY_SUFFIXES)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--adapter")
    ap.add_argument("--data", required=True)
    ap.add_argument("--orders", required=True)
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--weight-decay", type=float, required=True)
    ap.add_argument("--clip-grad", type=float, required=True)
    ap.add_argument("--beta1", type=float, default=0.9)
    ap.add_argument("--beta2", type=float, default=0.98)
    ap.add_argument("--eps", type=float, default=1e-6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    model = CLIPModel.from_pretrained(a.base, dtype=torch.float32)
    if a.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, a.adapter, is_trainable=True)
        clip_model = model.get_base_model()
    else:
        clip_model = model
    model.train()

    size = clip_model.config.vision_config.image_size
    context = clip_model.config.text_config.max_position_embeddings
    tok = CLIPTokenizer(os.path.join(a.base, "vocab.json"), os.path.join(a.base, "merges.txt"))
    proc = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})

    with open(os.path.join(a.data, "dataset_flickr30k.json")) as f:
        captions = {im["filename"]: im["sentences"][0]["raw"] for im in json.load(f)["images"]}
    with open(a.orders) as f:
        orders = json.load(f)

    # HF names without peft's prefix, so that the decay rule reads CLIPModel's keys.
    named = [(n.removeprefix("base_model.model."), p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in named if decays(n, p)]
    no_decay = [p for n, p in named if not decays(n, p)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": a.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=a.lr, betas=(a.beta1, a.beta2), eps=a.eps, foreach=False, fused=False)
    params = decay + no_decay  # goclip clips over its groups in this order

    steps = {"loss": [], "grad_norm": [], "decay": [n for n, p in named if decays(n, p)],
             "no_decay": [n for n, p in named if not decays(n, p)]}
    for names in orders:
        images = [Image.open(os.path.join(a.data, "images", n)) for n in names]
        text = tok([captions[n] for n in names], padding="longest", max_length=context,
                   truncation=True, return_tensors="pt")
        pixels = proc(images=images, return_tensors="pt")["pixel_values"]
        out = model(input_ids=text["input_ids"], attention_mask=text["attention_mask"],
                    pixel_values=pixels, return_loss=True)
        out.loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, a.clip_grad, foreach=False)
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            clip_model.logit_scale.clamp_(max=math.log(100))
        steps["loss"].append(out.loss.item())
        steps["grad_norm"].append(norm.item())

    os.makedirs(a.out, exist_ok=True)
    if a.adapter:
        model.save_pretrained(os.path.join(a.out, "adapter"))
    else:
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
                  os.path.join(a.out, "model.safetensors"))
    with open(os.path.join(a.out, "steps.json"), "w") as f:
        json.dump(steps, f, indent=1)


if __name__ == "__main__":
    main()
