#!/usr/bin/env python3
"""check_hf_export.py: developer cross-check (not run by ctest) that a folder
written by hf_save loads in HF transformers as LlamaForCausalLM.

    /opt/hfenv/bin/python tests/check_hf_export.py DIR [--llama2c FILE.bin]

Checks, exiting non-zero on any failure:
  * from_pretrained(DIR) reports no missing, unexpected or mismatched tensors
    (transformers would otherwise silently random-initialize them);
  * the parameter count matches the one config.json implies;
  * every model weight equals the safetensors tensor of the same name;
  * a forward pass gives finite logits of shape [1, T, vocab].
With --llama2c FILE, the logits are also compared against an independent
float64 forward pass of the original llama2.c checkpoint (interleaved-pair
RoPE, llama2.c's tensor layout), which checks the q/k row permutation done by
the converter.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import torch


def expected_param_count(cfg):
    c, f, v, l = (cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"],
                  cfg["num_hidden_layers"])
    hd = c // cfg["num_attention_heads"]
    qd = cfg["num_attention_heads"] * hd
    kvd = cfg.get("num_key_value_heads", cfg["num_attention_heads"]) * hd
    per_layer = 2 * c + qd * c + 2 * kvd * c + c * qd + 3 * f * c
    n = v * c + l * per_layer + c
    if not cfg.get("tie_word_embeddings", False):
        n += v * c
    return n


def llama2c_forward(path, tokens):
    """Reference llama2.c forward (float64) on the original .bin; logits [T, V]."""
    with open(path, "rb") as fh:
        dim, hidden, L, nh, nkv, V, seq = struct.unpack("7i", fh.read(28))
        data = np.frombuffer(fh.read(), dtype=np.float32).astype(np.float64)
    tied = V > 0
    V = abs(V)
    hd = dim // nh
    kvd = nkv * hd
    pos = 0

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        a = data[pos:pos + n].reshape(shape)
        pos += n
        return torch.from_numpy(a.copy())

    emb = take(V, dim)
    rms_att = take(L, dim)
    wq, wk, wv = take(L, dim, dim), take(L, kvd, dim), take(L, kvd, dim)
    wo = take(L, dim, dim)
    rms_ffn = take(L, dim)
    w1, w2, w3 = take(L, hidden, dim), take(L, dim, hidden), take(L, hidden, dim)
    rms_final = take(dim)
    take(seq, hd // 2)
    take(seq, hd // 2)
    wcls = emb if tied else take(V, dim)
    assert pos == data.size, "llama2.c file size does not match its header"

    T = len(tokens)
    t = torch.arange(T, dtype=torch.float64)
    inv = 10000.0 ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)   # [hd/2]
    ang = t[:, None] * inv[None, :]                                        # [T, hd/2]
    cos, sin = torch.cos(ang), torch.sin(ang)

    def rope_interleaved(x):  # x [T, heads, hd]: rotate pairs (2j, 2j+1)
        a, b = x[..., 0::2], x[..., 1::2]
        c, s = cos[:, None, :], sin[:, None, :]
        out = torch.empty_like(x)
        out[..., 0::2] = a * c - b * s
        out[..., 1::2] = a * s + b * c
        return out

    def rmsnorm(x, w):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5) * w

    x = emb[torch.tensor(tokens)]
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    for l in range(L):
        h = rmsnorm(x, rms_att[l])
        q = rope_interleaved((h @ wq[l].T).view(T, nh, hd))
        k = rope_interleaved((h @ wk[l].T).view(T, nkv, hd))
        v = (h @ wv[l].T).view(T, nkv, hd)
        rep = nh // nkv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        att = torch.einsum("thd,shd->hts", q, k) / hd ** 0.5 + mask
        att = torch.softmax(att, dim=-1)
        o = torch.einsum("hts,shd->thd", att, v).reshape(T, dim)
        x = x + o @ wo[l].T
        h = rmsnorm(x, rms_ffn[l])
        x = x + (torch.nn.functional.silu(h @ w1[l].T) * (h @ w3[l].T)) @ w2[l].T
    return rmsnorm(x, rms_final) @ wcls.T


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", help="folder written by hf_save")
    ap.add_argument("--llama2c", help="original llama2.c .bin to compare logits against")
    ap.add_argument("--tokens", type=int, default=16, help="sequence length of the test pass")
    args = ap.parse_args()

    from safetensors.torch import load_file
    from transformers import LlamaForCausalLM

    with open(os.path.join(args.dir, "config.json")) as fh:
        cfg = json.load(fh)
    model, info = LlamaForCausalLM.from_pretrained(args.dir, dtype=torch.float32,
                                                   output_loading_info=True)
    model.eval()
    ok = True
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        if info.get(key):
            print(f"FAIL: {key}: {sorted(info[key])}")
            ok = False

    n = sum(p.numel() for p in model.parameters())
    want = expected_param_count(cfg)
    print(f"parameters: {n} (config implies {want}), dtype in file: {cfg.get('torch_dtype')}")
    if n != want:
        print("FAIL: parameter count")
        ok = False

    tensors = load_file(os.path.join(args.dir, "model.safetensors"))
    sd = model.state_dict()
    for name, t in tensors.items():
        if name not in sd or not torch.equal(sd[name], t.float()):
            print(f"FAIL: model weight {name} differs from the file")
            ok = False
    if cfg.get("tie_word_embeddings"):
        if model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
            print("FAIL: tied model but lm_head is not the embedding")
            ok = False

    V = cfg["vocab_size"]
    T = min(args.tokens, cfg["max_position_embeddings"])
    tokens = [(7 * i + 1) % V for i in range(T)]
    with torch.no_grad():
        logits = model(torch.tensor([tokens])).logits
    print(f"forward: logits shape {tuple(logits.shape)}")
    if tuple(logits.shape) != (1, T, V) or not torch.isfinite(logits).all():
        print("FAIL: logits shape or non-finite values")
        ok = False

    if args.llama2c:
        model64 = model.double()
        with torch.no_grad():
            got = model64(torch.tensor([tokens])).logits[0]
        ref = llama2c_forward(args.llama2c, tokens)
        err = (got - ref).abs().max().item() / ref.abs().max().item()
        print(f"llama2.c reference: max |hf - ref| / max |ref| = {err:.3e}")
        # transformers computes the RoPE angles in float32 even for a float64
        # model, so agreement is ~1e-7, not 1e-15; a wrong q/k permutation
        # gives errors of order 1.
        if not err < 1e-5:
            print("FAIL: logits differ from the llama2.c reference")
            ok = False

    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
