"""safetensors_f32.py: read a float32 safetensors file with the standard
library only (the Python cross-check scripts in tests/ share it)."""
import json
import struct
import sys


def read_safetensors(path):
    """{name: (shape, tuple of floats)}; exits with a message on a non-F32 tensor."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        if t["dtype"] != "F32":
            sys.exit(f"{path}: {name} is {t['dtype']}; these checks read F32 only")
        b, e = t["data_offsets"]
        out[name] = (t["shape"], struct.unpack(f"<{(e - b) // 4}f", data[b:e]))
    return out
