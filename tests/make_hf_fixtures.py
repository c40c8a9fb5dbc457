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
    /tmp/hf/bin/python tests/make_hf_fixtures.py
"""
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))

CASES = {
    # name: (config kwargs, batch, time)
    "mha_untied": (dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=4, intermediate_size=48, vocab_size=61,
                        tie_word_embeddings=False, rope_theta=10000.0, rms_norm_eps=1e-5), 2, 9),
    "gqa_tied": (dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=6,
                      num_key_value_heads=2, intermediate_size=80, vocab_size=53,
                      tie_word_embeddings=True, rope_theta=500.0, rms_norm_eps=1e-6), 2, 11),
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
    print(f"{name}: {sum(p.numel() for p in model.parameters())} params, loss {loss.item():.6f}")


def main():
    for i, (name, (kw, B, T)) in enumerate(CASES.items()):
        build(name, kw, B, T, seed=1234 + i)
    return 0


if __name__ == "__main__":
    sys.exit(main())
