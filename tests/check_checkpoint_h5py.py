#!/usr/bin/env python3
"""check_checkpoint_h5py.py: read a PostShare checkpoint with h5py (an independent
HDF5 reader) and cross-check it (developer tool; CI uses h5dump instead).

    python check_checkpoint_h5py.py RUN/ckpt-00000040.h5 [--hf RUN/model]

Checks: the format attributes; /model describes a LLaMA whose parameter count
matches the tensors; every group under /params holds master, adam_m and adam_v
of one shape, fp32, chunked with Fletcher32; the groups' creation order is the
parameter table's (the `index` attributes count up); v >= 0 (a second moment);
and with --hf, that every master tensor equals the same tensor of the HF
model.safetensors bit for bit (the final checkpoint of a run and its model/).
Needs h5py and numpy (and safetensors for --hf).
"""
import argparse
import sys

import h5py
import numpy as np


def text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt")
    ap.add_argument("--hf", help="an HF model folder to compare the master weights with")
    a = ap.parse_args()
    f = h5py.File(a.ckpt, "r")
    fmt = text(f.attrs["format"])
    assert fmt == "postshare-checkpoint", fmt
    print(f"format {fmt} v{int(f.attrs['format_version'])}, step {int(f.attrs['step'])}, "
          f"written by postshare {text(f.attrs['program_version'])}")
    m = f["model"].attrs
    print("model:", {k: m[k].item() for k in m})
    params = f["params"]
    names = list(params)  # h5py lists by creation order when it is tracked
    idx = [int(params[n].attrs["index"]) for n in names]
    assert idx == list(range(len(names))), "groups are not in the parameter table's order"
    total = 0
    for n in names:
        g = params[n]
        shapes = {k: g[k].shape for k in ("master", "adam_m", "adam_v")}
        assert len(set(shapes.values())) == 1, (n, shapes)
        for k in ("master", "adam_m", "adam_v"):
            d = g[k]
            assert d.dtype == np.float32 and d.chunks and d.fletcher32, (n, k)
        assert (g["adam_v"][()] >= 0).all(), n
        total += g["master"].size
    assert total == int(m["n_params"]), (total, int(m["n_params"]))
    print(f"{len(names)} tensors, {total} parameters; fp32, chunked, Fletcher32")
    print("config:", f["config"][0].decode().splitlines()[0])
    if "plan" in f:
        print("plan:", f["plan"][0].decode()[:200])
    if a.hf:
        from safetensors.numpy import load_file
        hf = load_file(f"{a.hf}/model.safetensors")
        for n in names:
            x = params[n]["master"][()]
            assert n in hf, f"{n} missing from the HF model"
            assert np.array_equal(x.view(np.uint32), hf[n].astype(np.float32).view(np.uint32)), n
        print(f"master weights equal {a.hf}/model.safetensors bit for bit")
    print("OK")


if __name__ == "__main__":
    sys.exit(main())
