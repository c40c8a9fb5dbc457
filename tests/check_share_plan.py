#!/usr/bin/env python3
"""check_share_plan.py: an independent re-implementation of PostShare's head
matching and plan selection rule (docs/sharing.md), in plain Python with the
standard library only, to check a plan written by `postshare match`.

    python3 tests/check_share_plan.py MODEL_DIR PLAN.json

MODEL_DIR is an HF folder with config.json and a float32 model.safetensors.
From the weights alone it recomputes every unit's match vector (a unit is a
head, or a KV group under GQA: its query heads' Wq rows plus its K/V head's
rows), the cosine similarity of every unit of layer l >= 1 with every unit of
layers 0..l-1 (in float64), and the selection: scan all (target, source) pairs
by decreasing similarity (ties: lower target, then lower source) and take a
pair when the target is neither replaced nor a source and the source is not
replaced, until floor(ratio * units) pairs are taken. Exits non-zero unless the
plan names exactly those pairs with similarities within 1e-4.
"""
import json
import math
import os
import sys

from safetensors_f32 import read_safetensors


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    model_dir, plan_path = sys.argv[1], sys.argv[2]
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    plan = json.load(open(plan_path))
    w = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    L, nh = cfg["num_hidden_layers"], cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    C = cfg["hidden_size"]
    hd, G, U = C // nh, nh // nkv, nkv
    parts = {"qk": "qk", "q": "q", "k": "k", "v": "v", "qkv": "qkv"}[plan["match"]]

    def vec(l, u):
        v = []
        for p in parts:
            name = f"model.layers.{l}.self_attn.{p}_proj.weight"
            rows = G * hd if p == "q" else hd
            flat = w[name][1]
            v.extend(flat[u * rows * C:(u + 1) * rows * C])
        return v

    N = L * U
    vecs = [vec(i // U, i % U) for i in range(N)]
    norms = [math.sqrt(sum(x * x for x in v)) for v in vecs]
    pairs = []
    for i in range(U, N):
        for j in range((i // U) * U):
            d = sum(a * b for a, b in zip(vecs[i], vecs[j]))
            s = d / (norms[i] * norms[j]) if norms[i] > 0 and norms[j] > 0 else 0.0
            pairs.append((-s, i, j))
    pairs.sort()
    k = math.floor(plan["ratio"] * N + 1e-9)
    replaced, sources, chosen = set(), set(), {}
    for neg_s, i, j in pairs:
        if len(chosen) == k:
            break
        if i in replaced or i in sources or j in replaced:
            continue
        replaced.add(i)
        sources.add(j)
        chosen[(i // U, i % U)] = ((j // U, j % U), -neg_s)
    if len(chosen) < k:
        sys.exit(f"selection stops at {len(chosen)} of {k}")

    got = {(e["layer"], e["head"]): ((e["source_layer"], e["source_head"]), e["similarity"])
           for e in plan["shared"]}
    bad = 0
    if set(got) != set(chosen):
        print(f"replaced units differ: plan {sorted(got)} vs here {sorted(chosen)}")
        bad += 1
    for t, (src, s) in chosen.items():
        if t in got:
            if got[t][0] != src:
                print(f"L{t[0]}.{t[1]}: plan source {got[t][0]}, here {src}")
                bad += 1
            if abs(got[t][1] - s) > 1e-4:
                print(f"L{t[0]}.{t[1]}: plan similarity {got[t][1]}, here {s}")
                bad += 1
    if plan["replaced"] != k:
        print(f"plan replaces {plan['replaced']}, floor(ratio x units) = {k}")
        bad += 1
    if bad:
        sys.exit(1)
    print(f"OK: {k} of {N} units, match {plan['match']}, ratio {plan['ratio']}: same pairs and "
          f"similarities (max |diff| {max([abs(got[t][1] - chosen[t][1]) for t in chosen] or [0]):.2e})")


if __name__ == "__main__":
    main()
