"""open_clip's side of goclip's open_clip checkpoint tests (clip/openclip_test.go and
cmd/goclip/openclip_test.go). Run it with the project's venv, from a folder outside the
repository (its torch/ folder would shadow the real torch package).

  make  --arch ARCH --seed N --weights FILE[,FILE...] --wrap WRAP[,WRAP...]
        --images A.png,B.png --texts FILE --ref DIR
      builds open_clip's CLIP (ARCH: a built-in model name such as ViT-B-16, random
      init, nothing downloaded; or a model config JSON file, registered with
      open_clip.add_model_config), perturbs every parameter (so that biases and layer
      norms are not 0 and 1), writes its state dict to each FILE (.safetensors, or
      torch.save for .pt/.bin; its WRAP: bare, the dict itself; state_dict,
      {"state_dict": dict}; module, that with "module." before every key) and, under DIR, pixels.npy (the images preprocessed by
      transformers' CLIPImageProcessor (PIL) at the model's size), ids.npy
      (open_clip.tokenize of the texts' lines at the context length), image_embeds.npy
      and text_embeds.npy (encode_image / encode_text, float32, not normalised),
      logits.npy (get_logits' logits_per_image) and logit_scale.npy.
  embed --arch ARCH [--weights FILE] --ref DIR --out DIR
      loads FILE (goclip's output) into open_clip's CLIP with load_state_dict(strict=True)
      (ARCH local-dir:FOLDER: open_clip loads goclip's open_clip folder itself) and
      writes DIR/image_embeds.npy, text_embeds.npy and logits.npy for the inputs of --ref.
"""
import argparse
import json
import os

import numpy as np
import torch
import open_clip


def build(arch):
    if arch.startswith("local-dir:"):
        name = arch  # open_clip_config.json and the weights, loaded strictly by open_clip
    elif os.path.isfile(arch):
        open_clip.add_model_config(arch)
        name = os.path.splitext(os.path.basename(arch))[0]
    else:
        name = arch
    model = open_clip.create_model(name, pretrained=None)
    model.eval()
    return model


def read_weights(path):
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def encode(model, ref):
    pixels = torch.from_numpy(np.load(os.path.join(ref, "pixels.npy")))
    ids = torch.from_numpy(np.load(os.path.join(ref, "ids.npy")))
    with torch.no_grad():
        img = model.encode_image(pixels).float().numpy()
        txt = model.encode_text(ids).float().numpy()
        logits = model.get_logits(pixels, ids)[0].float().numpy()  # logits_per_image
    return img, txt, logits


def cmd_make(a):
    torch.manual_seed(a.seed)
    model = build(a.arch)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                p.fill_(np.log(1 / 0.05))
            else:
                p.add_(torch.randn_like(p) * 0.02)
    bare = {k: v.contiguous() for k, v in model.state_dict().items()}
    files, wraps = a.weights.split(","), a.wrap.split(",")
    assert len(files) == len(wraps), "one --wrap per --weights file"
    for path, wrap in zip(files, wraps):
        sd = bare
        if wrap == "module":
            sd = {"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 3, "name": "test"}
        elif wrap == "state_dict":
            sd = {"state_dict": sd, "epoch": 3}
        else:
            assert wrap == "bare", wrap
        if path.endswith(".safetensors"):
            from safetensors.torch import save_file
            assert wrap == "bare", "safetensors holds a bare state dict"
            save_file(sd, path)
        else:
            torch.save(sd, path)

    # transformers 5's CLIPImageProcessor resizes with torchvision; the PIL one is the
    # reference goclip's preprocessing follows.
    try:
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor
    from PIL import Image
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    proc = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    images = [Image.open(p) for p in a.images.split(",")]
    pixels = proc(images=images, return_tensors="np")["pixel_values"].astype(np.float32)
    with open(a.texts, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f]
    ids = open_clip.tokenize(texts, context_length=model.context_length).numpy().astype(np.int64)
    os.makedirs(a.ref, exist_ok=True)
    np.save(os.path.join(a.ref, "pixels.npy"), pixels)
    np.save(os.path.join(a.ref, "ids.npy"), ids)
    img, txt, logits = encode(model, a.ref)
    np.save(os.path.join(a.ref, "image_embeds.npy"), img)
    np.save(os.path.join(a.ref, "text_embeds.npy"), txt)
    np.save(os.path.join(a.ref, "logits.npy"), logits)
    np.save(os.path.join(a.ref, "logit_scale.npy"), model.logit_scale.detach().numpy().astype(np.float32))


def cmd_embed(a):
    model = build(a.arch)
    if a.weights:
        model.load_state_dict(read_weights(a.weights), strict=True)
    img, txt, logits = encode(model, a.ref)
    os.makedirs(a.out, exist_ok=True)
    np.save(os.path.join(a.out, "logits.npy"), logits)
    np.save(os.path.join(a.out, "image_embeds.npy"), img)
    np.save(os.path.join(a.out, "text_embeds.npy"), txt)
    np.save(os.path.join(a.out, "logit_scale.npy"), model.logit_scale.detach().numpy().astype(np.float32))


def main():
    torch.set_num_threads(1)
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--arch", required=True)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--weights", required=True)
    m.add_argument("--wrap", default="bare")
    m.add_argument("--images", required=True)
    m.add_argument("--texts", required=True)
    m.add_argument("--ref", required=True)
    e = sub.add_parser("embed")
    e.add_argument("--arch", required=True)
    e.add_argument("--weights")
    e.add_argument("--ref", required=True)
    e.add_argument("--out", required=True)
    a = p.parse_args()
    {"make": cmd_make, "embed": cmd_embed}[a.cmd](a)
    print(json.dumps({"ok": a.cmd}))


if __name__ == "__main__":
    main()
