#!/usr/bin/env python3
"""Build the HF reference fixtures for tests/test_model_hf.c.

For each case, a small random LlamaForCausalLM (HF transformers, eager
attention) is saved in HF format (config.json + model.safetensors, fp32) with a
fixed batch and the reference outputs, computed in float64 so that the C fp32
implementation is compared against something more exact than itself:

  tests/fixtures/<case>/config.json, model.safetensors
  tests/fixtures/<case>/reference.safetensors:
      tokens  I32 [B,T]    input ids
      targets I32 [B,T]    next-token targets, -100 = ignored
      logits  F32 [B,T,V]
      loss    F32 [1]      mean cross-entropy over counted targets
      grad.<HF name> F32   d loss / d parameter, for every parameter

Not part of CI (needs torch + transformers from PyPI):
    python3 -m venv /tmp/hf && /tmp/hf/bin/pip install torch transformers safetensors
    /tmp/hf/bin/python tests/make_hf_fixtures.py [CASE ...]   # default: every case

The RoPE-scaling cases (llama3_*, linear_hd) were made with transformers 5.25 / torch
2.15: Llama 3.2-shaped (GQA, tied, explicit head_dim != hidden/heads) with
rope_parameters llama3 (factor 8, low_freq_factor 0.5, high_freq_factor 4,
original_max_position_embeddings 32, theta 500000: the head's 8 frequencies fall
in all three bands: high (unchanged), medium (blended) and low (divided)), at
T = 12 and T = 48 (below and above original_max_position_embeddings); and
rope linear (factor 4) with head_dim 8 on hidden 32 / 2 heads, its config.json
rewritten in the transformers 4 form (top-level rope_theta, rope_scaling with "type").
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))

LLAMA32 = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
               head_dim=16, intermediate_size=80, vocab_size=53, tie_word_embeddings=True,
               rms_norm_eps=1e-5)
LLAMA3_ROPE = dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=0.5,
                   high_freq_factor=4.0, original_max_position_embeddings=32)

CASES = {
    # name: (config kwargs, batch, time)
    "mha_untied": (dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=4, intermediate_size=48, vocab_size=61,
                        tie_word_embeddings=False, rope_theta=10000.0, rms_norm_eps=1e-5), 2, 9),
    "gqa_tied": (dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=6,
                      num_key_value_heads=2, intermediate_size=80, vocab_size=53,
                      tie_word_embeddings=True, rope_theta=500.0, rms_norm_eps=1e-6), 2, 11),
    "llama3_short": (dict(LLAMA32, rope_parameters=LLAMA3_ROPE), 2, 12),
    "llama3_long": (dict(LLAMA32, rope_parameters=LLAMA3_ROPE), 2, 48),
    "linear_hd": (dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=2, head_dim=8, intermediate_size=48, vocab_size=61,
                       tie_word_embeddings=False, rms_norm_eps=1e-5,
                       rope_parameters=dict(rope_type="linear", factor=4.0, rope_theta=10000.0)),
                  2, 24),
}


def build(name, kw, B, T, seed):
    torch.manual_seed(seed)
    cfg = LlamaConfig(max_position_embeddings=64, hidden_act="silu", attention_bias=False,
                      mlp_bias=False, initializer_range=0.2, **kw)
    cfg._attn_implementation = "eager"
    model = LlamaForCausalLM(cfg).float()
    # Random norm weights too, so the norm gradients are exercised off 1.0.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
    out = os.path.join(HERE, "fixtures", name)
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)

    V = cfg.vocab_size
    tokens = torch.randint(0, V, (B, T))
    targets = torch.randint(0, V, (B, T))
    targets[0, 0] = -100          # ignored positions
    targets[1, T - 1] = -100
    targets[1, 3] = -100

    m64 = LlamaForCausalLM(cfg)
    m64.load_state_dict(model.state_dict())
    m64 = m64.double()
    m64.zero_grad()
    logits = m64(input_ids=tokens).logits  # [B,T,V]
    loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-100)
    loss.backward()
    ref = {
        "tokens": tokens.to(torch.int32).contiguous(),
        "targets": targets.to(torch.int32).contiguous(),
        "logits": logits.detach().float().contiguous(),
        "loss": loss.detach().float().reshape(1),
    }
    for n, p in m64.named_parameters():
        ref["grad." + n] = p.grad.detach().float().contiguous()
    save_file(ref, os.path.join(out, "reference.safetensors"))
    if name == "linear_hd":  # the transformers 4 form of the same config
        path = os.path.join(out, "config.json")
        with open(path) as f:
            c = json.load(f)
        rp = c.pop("rope_parameters")
        c["rope_theta"] = rp["rope_theta"]
        c["rope_scaling"] = {"type": "linear", "factor": rp["factor"]}
        with open(path, "w") as f:
            json.dump(c, f, indent=2, sort_keys=True)
    print(f"{name}: {sum(p.numel() for p in model.parameters())} params, loss {loss.item():.6f}")


def main():
    want = sys.argv[1:] or list(CASES)
    for i, (name, (kw, B, T)) in enumerate(CASES.items()):
        if name in want:
            build(name, kw, B, T, seed=1234 + i)
    return 0


if __name__ == "__main__":
    sys.exit(main())
