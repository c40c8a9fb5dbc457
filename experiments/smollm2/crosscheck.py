#!/usr/bin/env python3
"""Cross-check run.sh's postshare-made inputs against the Python path.

usage: crosscheck.py WORK

WORK/hf (postshare convert of the GGUF) must hold bitwise the tensors of
WORK/pyref/hf (convert_gguf.py: transformers + gguf), and the token shards of
postshare prepare (WORK/data/wt2_{train,val}_*.bin) the ids of
tokenize_wikitext.py (WORK/pyref/data): its evaluation shard is the first ids of
the train shard, its calibration shard the last ids of train + val.
"""
import glob, struct, sys

import numpy as np
from safetensors.numpy import load_file

work = sys.argv[1]


def ids(path):
    b = open(path, "rb").read()
    magic, _, n = struct.unpack("<3i", b[:12])
    assert magic == 20240520, path
    return np.frombuffer(b[1024:1024 + 2 * n], dtype="<u2")


a = load_file(work + "/hf/model.safetensors")
b = load_file(work + "/pyref/hf/model.safetensors")
assert set(a) == set(b), f"tensor names differ: {sorted(set(a) ^ set(b))[:5]}"
worst = max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a)
assert worst == 0.0, f"weights differ by up to {worst}"
train = np.concatenate([ids(f) for f in sorted(glob.glob(work + "/data/wt2_train_*.bin"))])
val = np.concatenate([ids(f) for f in sorted(glob.glob(work + "/data/wt2_val_*.bin"))])
ev, cal = ids(work + "/pyref/data/wt2_eval_000.bin"), ids(work + "/pyref/data/wt2_calib_000.bin")
allids = np.concatenate([train, val])
assert np.array_equal(train[:len(ev)], ev), "evaluation ids differ"
assert np.array_equal(allids[-len(cal):], cal), "calibration-end ids differ"
print(f"crosscheck: {len(a)} tensors bitwise equal; {len(ev)} evaluation and the last "
      f"{len(cal)} ids equal ({len(train)} + {len(val)} tokens)")
