"""Python peer of goclip's shard pipeline (bench/data): Python's webdataset reads the
same tar shards, PIL decodes each jpg member and bench/peer/preprocess_pil.py's
CLIPImageProcessor arithmetic (bicubic shortest-side resize to 224, centre crop,
normalise to float32 CHW) preprocesses it, in a torch DataLoader with --workers worker
processes collating batches of 32. Then the raw decode rate of PIL on one core
(Image.open(...).convert("RGB") of JPEGs held in memory), of preprocessing decoded
images, and of decoding plus preprocessing. Prints one JSON line.

    python bench/peer/data_wds.py --data 'SHARDS/train-{000000..000003}.tar' [--workers 2]
"""
import argparse
import io
import json
import os
import sys
import tarfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
import torch  # noqa: E402
import webdataset as wds  # noqa: E402
from PIL import Image  # noqa: E402
from preprocess_pil import preprocess, preprocess_image  # noqa: E402


def shard_list(spec):
    if os.path.isdir(spec):
        return sorted(os.path.join(spec, f) for f in os.listdir(spec) if f.endswith(".tar"))
    return spec  # a brace pattern, as webdataset expands it


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--time", type=float, default=4.0)
    ap.add_argument("--decode-time", type=float, default=2.0)
    ap.add_argument("--decode-images", type=int, default=100)
    a = ap.parse_args()
    torch.set_num_threads(1)
    urls = shard_list(a.data)
    size = a.size
    ds = (wds.WebDataset(urls, shardshuffle=False, empty_check=False)
          .to_tuple("jpg", "txt")
          .map_tuple(lambda b: torch.from_numpy(preprocess(io.BytesIO(b), size)), lambda t: t.decode("utf-8")))
    dl = torch.utils.data.DataLoader(ds, batch_size=a.batch, num_workers=a.workers, persistent_workers=True)

    # Timed from the first batch of the first epoch (the workers are running by then),
    # as bench/data times goclip.
    t0, n = None, 0
    while t0 is None or time.perf_counter() - t0 < a.time:
        for x, _ in dl:
            assert x.shape[1:] == (3, size, size) and x.dtype == torch.float32
            if t0 is None:
                t0 = time.perf_counter()
            else:
                n += x.shape[0]
    stream = n / (time.perf_counter() - t0)

    del dl  # stop the workers before the one-core measurements
    jpegs = []
    paths = urls if isinstance(urls, list) else list(wds.shardlists.expand_urls(urls))
    for p in paths:
        with tarfile.open(p) as tf:
            for m in tf:
                if m.name.lower().endswith(".jpg") and len(jpegs) < a.decode_images:
                    jpegs.append(tf.extractfile(m).read())
        if len(jpegs) >= a.decode_images:
            break
    t1, k = time.perf_counter(), 0
    while time.perf_counter() - t1 < a.decode_time:
        for b in jpegs:
            Image.open(io.BytesIO(b)).convert("RGB")
            k += 1
    decode = k / (time.perf_counter() - t1)
    t2, k = time.perf_counter(), 0
    while time.perf_counter() - t2 < a.decode_time:
        for b in jpegs:
            preprocess(io.BytesIO(b), size)
            k += 1
    decode_pre = k / (time.perf_counter() - t2)
    images = [Image.open(io.BytesIO(b)).convert("RGB") for b in jpegs]
    t3, k = time.perf_counter(), 0
    while time.perf_counter() - t3 < a.decode_time:
        for im in images:
            preprocess_image(im, size)
            k += 1
    pre = k / (time.perf_counter() - t3)
    print(json.dumps({"decoder": "PIL", "workers": a.workers, "size": size, "batch": a.batch,
                      "stream_images": n, "stream_images_per_s": stream, "decode_images_per_s": decode,
                      "decode_preprocess_images_per_s": decode_pre, "preprocess_images_per_s": pre,
                      "pil": Image.__version__, "numpy": np.__version__, "torch": torch.__version__,
                      "webdataset": wds.__version__}))


if __name__ == "__main__":
    main()
