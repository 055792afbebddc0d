#!/usr/bin/python3
"""PIL peer of goclip's image pipeline: the same decode + CLIP preprocessing
(transformers' CLIPImageProcessor arithmetic, written out with PIL and numpy) over the
same JPEG files, with N worker processes (multiprocessing), timed for at least --time
seconds. Prints one JSON line with images/s.

Run with Debian's /usr/bin/python3 (python3-pil, python3-numpy).
"""
import argparse
import glob
import json
import multiprocessing as mp
import os
import time

import numpy as np
from PIL import Image

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def preprocess(path, size):
    return preprocess_image(Image.open(path).convert("RGB"), size)


def preprocess_image(im, size):
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    nl = int(size * long / short)
    nw, nh = (size, nl) if w <= h else (nl, size)
    im = im.resize((nw, nh), resample=Image.BICUBIC, reducing_gap=None)
    a = np.asarray(im)
    top, left = (nh - size) // 2, (nw - size) // 2
    a = a[top:top + size, left:left + size]
    a = (a.astype(np.float64) * (1 / 255)).astype(np.float32)
    a = (a - MEAN) / STD
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def work(args):
    path, size = args
    x = preprocess(path, size)
    return x.shape[0]  # keep the result in the worker: no IPC of pixels


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--time", type=float, default=3.0)
    a = ap.parse_args()
    files = sorted(glob.glob(os.path.join(a.dir, "*.jpg")))
    jobs = [(f, a.size) for f in files]
    with mp.Pool(a.workers) as pool:
        pool.map(work, jobs[: 2 * a.workers])  # start the workers
        n, t0 = 0, time.perf_counter()
        while True:
            for _ in pool.imap_unordered(work, jobs, chunksize=8):
                n += 1
            if time.perf_counter() - t0 >= a.time:
                break
        dt = time.perf_counter() - t0
    print(json.dumps({"images": len(files), "workers": a.workers, "size": a.size,
                      "decode_preprocess_images_per_s": n / dt,
                      "pil": Image.__version__, "numpy": np.__version__}))


if __name__ == "__main__":
    main()
