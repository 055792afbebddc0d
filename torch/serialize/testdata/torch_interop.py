"""Python side of the torch/serialize interop tests (run with /usr/bin/python3).

    torch_interop.py load OUT.json FILE...   torch.load(FILE, weights_only=True) each
                                               file; write {FILE: summary} to OUT.json
    torch_interop.py load-unsafe OUT.json FILE...   the same with weights_only=False
    torch_interop.py save DIR                 torch.save test files into DIR, with
                                               DIR/expected.json: {name: summary}
    torch_interop.py st-check OUT.json FILE   parse a safetensors file by the spec
                                               (no safetensors package), check the
                                               layout and summarise its tensors
    torch_interop.py st-write DIR             write DIR/py.safetensors by the spec,
                                               with DIR/py.safetensors.json
    torch_interop.py globals DIR              torch.save files that name globals
                                               into DIR, with DIR/globals.json:
                                               {name: the weights_only load's error
                                               or ""}

A summary is JSON that Go builds the same way from its own values: tensors
become {"tensor": {"dtype", "shape", "sha256"}} over their little-endian
C-contiguous bytes, floats their IEEE bits, ints decimal strings.
"""
import collections
import hashlib
import json
import os
import struct
import sys

import torch

DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
BY_NAME = {v: k for k, v in DTYPES.items()}


def tensor_bytes(t):
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def summary(v):
    if isinstance(v, torch.Tensor):
        return {"tensor": {"dtype": DTYPES[v.dtype], "shape": list(v.shape),
                           "sha256": hashlib.sha256(tensor_bytes(v)).hexdigest()}}
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if isinstance(k, bool):
                key = "b:" + ("true" if k else "false")
            elif isinstance(k, int):
                key = "i:%d" % k
            else:
                key = "s:" + k
            out[key] = summary(x)
        return {"dict": out}
    if isinstance(v, list):
        return {"list": [summary(x) for x in v]}
    if isinstance(v, tuple):
        return {"tuple": [summary(x) for x in v]}
    if v is None:
        return {"none": True}
    if isinstance(v, bool):
        return {"bool": v}
    if isinstance(v, int):
        return {"int": str(v)}
    if isinstance(v, float):
        return {"float": str(struct.unpack("<Q", struct.pack("<d", v))[0])}
    if isinstance(v, str):
        return {"str": v}
    if isinstance(v, (bytes, bytearray)):
        return {"bytes": bytes(v).hex()}
    raise TypeError("cannot summarise %r" % type(v))


def load(out, files, weights_only):
    res = {}
    for f in files:
        obj = torch.load(f, weights_only=weights_only)
        res[f] = {"summary": summary(obj), "type": type(obj).__name__,
                  "torch": torch.__version__}
    with open(out, "w") as fh:
        json.dump(res, fh)


def make_state_dict():
    g = torch.Generator().manual_seed(7)
    base = torch.randn(4, 6, generator=g)
    sd = collections.OrderedDict()
    sd["f32"] = torch.randn(3, 5, generator=g)
    sd["f16"] = torch.randn(2, 3, generator=g).half()
    sd["bf16"] = torch.randn(3, 2, generator=g).bfloat16()
    sd["f64"] = torch.randn(5, generator=g).double()
    sd["i64"] = torch.tensor([-(2**40), -1, 0, 1, 2**62], dtype=torch.int64)
    sd["i32"] = torch.tensor([[-7, 8], [2**31 - 1, -(2**31)]], dtype=torch.int32)
    sd["i16"] = torch.tensor([-300, 300], dtype=torch.int16)
    sd["i8"] = torch.tensor([-128, 127, 3], dtype=torch.int8)
    sd["u8"] = torch.tensor([0, 255, 17], dtype=torch.uint8)
    sd["bool"] = torch.tensor([[True, False, True]])
    sd["scalar"] = torch.tensor(3.5)
    sd["empty"] = torch.zeros(0, 3)
    # Views that share storage with "base", non-contiguous or offset.
    sd["base"] = base
    sd["transposed"] = base.t()
    sd["row_slice"] = base[1:3]
    sd["col_slice"] = base[:, 2:5]
    sd["strided"] = base[::2, ::3]
    sd["expanded"] = torch.arange(3.0).unsqueeze(0).expand(4, 3)
    sd["param"] = torch.nn.Parameter(torch.randn(2, 2, generator=g))
    bfbase = torch.randn(3, 4, generator=g).bfloat16()
    sd["bf16_t"] = bfbase.t()
    return sd


def save(d):
    sd = make_state_dict()
    expected = {}
    torch.save(sd, os.path.join(d, "sd_zip.pt"))
    expected["sd_zip.pt"] = summary(sd)
    torch.save(sd, os.path.join(d, "sd_legacy.pt"), _use_new_zipfile_serialization=False)
    expected["sd_legacy.pt"] = summary(sd)
    lin = torch.nn.Linear(3, 2)
    torch.save(lin.state_dict(), os.path.join(d, "module.pt"))
    expected["module.pt"] = summary(lin.state_dict())
    ckpt = {
        "model": collections.OrderedDict([("w", torch.ones(2, 2))]),
        "step": 1234,
        "big": 2**40,
        "neg": -5,
        "lr": 3e-4,
        "name": "run-\u00e9",
        "flags": [True, False, None],
        "shape": (1, 2, 3),
        "by_int": {0: torch.arange(3), 1: {"exp_avg": torch.zeros(2)}},
        "rng": torch.get_rng_state(),
        "raw": b"\x00\x01\xff",
    }
    torch.save(ckpt, os.path.join(d, "ckpt.pt"))
    expected["ckpt.pt"] = summary(ckpt)
    with open(os.path.join(d, "expected.json"), "w") as fh:
        json.dump(expected, fh)


def st_check(out, path):
    with open(path, "rb") as fh:
        buf = fh.read()
    n = struct.unpack("<Q", buf[:8])[0]
    assert n % 8 == 0, "header length %d not a multiple of 8" % n
    raw = buf[8:8 + n]
    text = raw.decode("utf-8")
    stripped = text.rstrip(" ")
    assert len(text) - len(stripped) < 8, "more than 7 bytes of padding"
    assert text.startswith("{") and stripped.endswith("}")
    header = json.loads(text)
    data = buf[8 + n:]
    meta = header.pop("__metadata__", None)
    spans = sorted((tuple(v["data_offsets"]), k) for k, v in header.items())
    pos = 0
    res = {}
    for (b, e), k in spans:
        assert b == pos, "gap or overlap at %s" % k
        info = header[k]
        dt = BY_NAME[info["dtype"]]
        size = torch.empty(0, dtype=dt).element_size()
        assert b % size == 0, "%s misaligned" % k
        numel = 1
        for s in info["shape"]:
            numel *= s
        assert e - b == numel * size, k
        chunk = data[b:e]
        if numel:
            t = torch.frombuffer(bytearray(chunk), dtype=dt).reshape(info["shape"])
        else:
            t = torch.empty(info["shape"], dtype=dt)
        res[k] = summary(t)
        pos = e
    assert pos == len(data), "data section has trailing bytes"
    with open(out, "w") as fh:
        json.dump({"tensors": res, "metadata": meta}, fh)


def st_write(d):
    sd = make_state_dict()
    tensors = {k: v.detach().contiguous() for k, v in sd.items()}
    order = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for k in order:
        nb = len(tensor_bytes(tensors[k]))
        header[k] = {"dtype": DTYPES[tensors[k].dtype], "shape": list(tensors[k].shape),
                     "data_offsets": [off, off + nb]}
        off += nb
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(os.path.join(d, "py.safetensors"), "wb") as fh:
        fh.write(struct.pack("<Q", len(hb)))
        fh.write(hb)
        for k in order:
            fh.write(tensor_bytes(tensors[k]))
    with open(os.path.join(d, "py.safetensors.json"), "w") as fh:
        json.dump({k: summary(v) for k, v in tensors.items()}, fh)


class RunsCode:
    """An object whose pickle calls os.system when loaded unsafely."""

    def __reduce__(self):
        return (os.system, ("true",))


class Plain:
    def __init__(self):
        self.a = 1


def with_attr():
    t = torch.ones(2)
    t.note = "x"  # saved through torch._tensor._rebuild_from_type_v2
    return t


def globals_files(d):
    sd = collections.OrderedDict([("w", torch.ones(2))])
    files = {
        # refused by torch.load(weights_only=True)
        "runs_code.pt": {"state_dict": sd, "x": RunsCode()},
        "plain_object.pt": {"state_dict": sd, "x": Plain()},
        "partial.pt": {"x": __import__("functools").partial(print, 1)},
        "complex.pt": {"x": 1 + 2j},
        # accepted
        "device_dtype.pt": {"w": torch.ones(2), "dev": torch.device("cpu"), "dt": torch.float16},
        "containers.pt": {"size": torch.Size([2, 3]), "set": {1, 2}, "raw": bytearray(b"ab"),
                          "counter": collections.Counter(a=1), "od": collections.OrderedDict(a=1)},
        "param.pt": {"p": torch.nn.Parameter(torch.ones(2)), "attr": with_attr()},
        "state_dict.pt": torch.nn.Linear(2, 2).state_dict(),
    }
    res = {}
    for name, obj in files.items():
        path = os.path.join(d, name)
        torch.save(obj, path)
        try:
            torch.load(path, weights_only=True)
            res[name] = ""
        except Exception as e:  # noqa: BLE001 - the message is the result
            res[name] = str(e).splitlines()[0] or type(e).__name__
    with open(os.path.join(d, "globals.json"), "w") as fh:
        json.dump(res, fh)


def main():
    cmd = sys.argv[1]
    if cmd == "load":
        load(sys.argv[2], sys.argv[3:], True)
    elif cmd == "load-unsafe":
        load(sys.argv[2], sys.argv[3:], False)
    elif cmd == "save":
        save(sys.argv[2])
    elif cmd == "st-check":
        st_check(sys.argv[2], sys.argv[3])
    elif cmd == "st-write":
        st_write(sys.argv[2])
    elif cmd == "globals":
        globals_files(sys.argv[2])
    else:
        raise SystemExit("unknown command " + cmd)


if __name__ == "__main__":
    main()
