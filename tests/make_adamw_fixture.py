#!/usr/bin/env python3
"""Build the AdamW training-step reference for tests/test_optim.c.

Starting from the tests/fixtures/mha_untied model and its reference batch
(tokens, targets from tests/fixtures/mha_untied/reference.safetensors), run K
training steps in float64 with torch exactly the way trainer/train.c does:

  per step: zero grads; for each of GRAD_ACCUM micro-batches (one sequence
  each): loss = mean cross-entropy over that micro-batch's counted targets,
  backward of loss / GRAD_ACCUM; grad_norm = global L2 norm (pre-clip);
  clip_grad_norm_ to CLIP; AdamW (decay 0.1 on matrices, 0 on norm weights)
  at the learning rate of trainer/optim.c's optim_lr (linear warmup, cosine
  to MIN_LR), set on every param group before the step.

CLIP is below the first steps' gradient norms and above the last one, so both
the clipped and the unclipped path are exercised (the script prints every norm
and whether it clipped).

  tests/fixtures/adamw/reference.safetensors:
      loss      F32 [K]  mean of the micro-batch losses, per step
      grad_norm F32 [K]  global gradient norm before clipping, per step
      lr        F32 [K]  learning rate used, per step
      param.<HF name> F32  every parameter after the K steps

Not part of CI (needs torch + transformers + safetensors from PyPI):
    python3 -m venv /tmp/hf && /tmp/hf/bin/pip install torch transformers safetensors
    /tmp/hf/bin/python tests/make_adamw_fixture.py
The constants below must match the ones in tests/test_optim.c.
"""
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import LlamaForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "fixtures", "mha_untied")
OUT = os.path.join(HERE, "fixtures", "adamw")

K = 4
GRAD_ACCUM = 2
LR, MIN_LR, WARMUP, TOTAL_STEPS = 1e-2, 1e-3, 2, 4
BETAS, EPS, WEIGHT_DECAY = (0.9, 0.95), 1e-8, 0.1
CLIP = 3.0


def f32(x):
    """Round a Python float to fp32, as the C side holds these constants."""
    return struct.unpack("f", struct.pack("f", x))[0]


def optim_lr(step):
    """trainer/optim.c optim_lr, with the same fp32 inputs (the warmup branch is
    one fp32 multiply and divide there; both roundings agree for these values)."""
    lr, min_lr = f32(LR), f32(MIN_LR)
    if WARMUP > 0 and step < WARMUP:
        return f32(lr * (step + 1) / WARMUP)
    if step >= TOTAL_STEPS:
        return min_lr
    span = TOTAL_STEPS - WARMUP
    if span <= 0:
        return lr
    progress = (step - WARMUP) / span
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress))
    return f32(min_lr + coeff * (lr - min_lr))


def main():
    torch.manual_seed(0)
    model = LlamaForCausalLM.from_pretrained(SRC, attn_implementation="eager",
                                             dtype=torch.float64)
    model = model.double()
    model.train()
    ref = load_file(os.path.join(SRC, "reference.safetensors"))
    tokens = ref["tokens"].long()
    targets = ref["targets"].long()
    B, T = tokens.shape
    assert B % GRAD_ACCUM == 0
    mb = B // GRAD_ACCUM
    V = model.config.vocab_size

    named = list(model.named_parameters())
    params = [p for _, p in named]
    decay = [p for _, p in named if p.dim() == 2]
    no_decay = [p for _, p in named if p.dim() == 1]
    opt = torch.optim.AdamW([
        {"params": decay, "weight_decay": WEIGHT_DECAY},
        {"params": no_decay, "weight_decay": 0.0},
    ], lr=LR, betas=BETAS, eps=EPS)

    losses, norms, lrs = [], [], []
    for step in range(K):
        opt.zero_grad(set_to_none=False)
        loss_sum = 0.0
        for micro in range(GRAD_ACCUM):
            tok = tokens[micro * mb:(micro + 1) * mb]
            tgt = targets[micro * mb:(micro + 1) * mb]
            logits = model(input_ids=tok).logits
            loss = F.cross_entropy(logits.reshape(-1, V), tgt.reshape(-1), ignore_index=-100)
            (loss / GRAD_ACCUM).backward()
            loss_sum += loss.item()
        gnorm = torch.nn.utils.clip_grad_norm_(params, CLIP).item()
        lr = optim_lr(step)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        losses.append(loss_sum / GRAD_ACCUM)
        norms.append(gnorm)
        lrs.append(lr)
        print(f"step {step}: loss {losses[-1]:.6f} grad_norm {gnorm:.6f} "
              f"({'clipped' if gnorm > CLIP else 'not clipped'} at {CLIP}) lr {lr:.6g}")
    assert norms[0] > CLIP, "clipping must be active on the first step"

    out = {
        "loss": torch.tensor(losses, dtype=torch.float32),
        "grad_norm": torch.tensor(norms, dtype=torch.float32),
        "lr": torch.tensor(lrs, dtype=torch.float32),
    }
    for n, p in named:
        out["param." + n] = p.detach().float().contiguous()
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "reference.safetensors")
    save_file(out, path)
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(named)} parameter tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
