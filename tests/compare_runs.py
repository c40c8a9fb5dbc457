#!/usr/bin/env python3
"""compare_runs.py: how far apart two training runs are (data-parallel tests).

usage: compare_runs.py RUN_A RUN_B [--from-step S] [--tol T] [--params]

Compares the training losses of metrics.jsonl step by step (steps > S only,
default all steps both runs have) and, with --params, every tensor of the
final model/model.safetensors (float32). Prints the worst relative
differences: loss |a-b|/|a|, tensor max|a-b| / max|a|. Exits 1 when a run
lacks steps the other has, a tensor is missing or shaped differently, or a
difference exceeds T (default 1e-5). Standard library only.
"""
import argparse
import json
import sys

from safetensors_f32 import read_safetensors


def losses(run):
    out = {}
    with open(f"{run}/metrics.jsonl") as f:
        for line in f:
            m = json.loads(line)
            if "loss" in m:
                out[m["step"]] = m["loss"]
    return out


def tensors(run):
    return read_safetensors(f"{run}/model/model.safetensors")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--from-step", type=int, default=0)
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--params", action="store_true")
    args = ap.parse_args()
    ok = True
    la, lb = losses(args.a), losses(args.b)
    steps = sorted(s for s in set(la) | set(lb) if s > args.from_step)
    missing = [s for s in steps if s not in la or s not in lb]
    if missing or not steps:
        print(f"steps missing from one run: {missing[:5]} (compared {len(steps)})")
        ok = False
    worst, at = 0.0, None
    for s in steps:
        if s in la and s in lb:
            d = abs(la[s] - lb[s]) / max(abs(la[s]), 1e-30)
            if d > worst:
                worst, at = d, s
    print(f"losses: {len(steps)} steps > {args.from_step}, worst relative difference "
          f"{worst:.3g}" + (f" at step {at}" if at else ""))
    ok &= worst <= args.tol
    if args.params:
        ta, tb = tensors(args.a), tensors(args.b)
        if set(ta) != set(tb):
            print(f"tensor names differ: {sorted(set(ta) ^ set(tb))[:5]}")
            ok = False
        pworst, pat = 0.0, None
        for name in sorted(set(ta) & set(tb)):
            (sa, va), (sb, vb) = ta[name], tb[name]
            if sa != sb:
                print(f"{name}: shape {sa} vs {sb}")
                ok = False
                continue
            scale = max(max(abs(x) for x in va), 1e-30)
            d = max(abs(x - y) for x, y in zip(va, vb)) / scale
            if d > pworst:
                pworst, pat = d, name
        print(f"params: {len(ta)} tensors, worst max|a-b|/max|a| {pworst:.3g}" +
              (f" ({pat})" if pat else ""))
        ok &= pworst <= args.tol
    print("OK" if ok else "DIFFERENT")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
