#!/usr/bin/env python3
"""bench_torch.py: the PyTorch baseline for experiments/gpu/bench_gpu.c.

HF transformers' LlamaForCausalLM (the same shapes as ps_bench_gpu's presets),
trained with AdamW the usual mixed-precision way: fp32 parameters and optimizer
state, bf16 autocast, SDPA attention, global-norm clipping at 1.0, fused AdamW.
--mode eager runs it as is; --mode compile wraps the model in torch.compile.
Tokens/s, MFU and peak memory are counted exactly as ps_bench_gpu counts them
(6 N_nonembedding + 6 L T d_attn FLOPs per token; peak = max_memory_allocated).
When the batch does not fit, the micro-batch is halved and gradients are
accumulated, so the tokens per optimizer step stay the same (noted in the JSON).

  python3 bench_torch.py --preset 125m|1b --mode eager|compile [--batch B] [--seq T]
                         [--steps N] [--warmup W] [--peak-tflops P] [--json FILE]
"""
import argparse
import json
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

# (hidden, layers, heads, kv heads, ffn, vocab, default batch): as in bench_gpu.c
PRESETS = {
    "125m": (768, 12, 12, 12, 2048, 32000, 16),
    "1b": (2048, 22, 32, 4, 5632, 32000, 8),
}


def run(model, opt, micro, accum, T, V, steps, warmup):
    """Times `steps` optimizer steps after `warmup`; returns (seconds, first loss, last loss)."""
    gen = torch.Generator(device="cuda").manual_seed(42)
    losses = []
    t0 = None
    for s in range(warmup + steps):
        if s == warmup:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        for _ in range(accum):
            x = torch.randint(0, V, (micro, T), device="cuda", generator=gen)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(input_ids=x, labels=x).loss / accum  # HF shifts the labels
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if s == 0 or s == warmup + steps - 1:
            losses.append(loss.item() * accum)
    torch.cuda.synchronize()
    return time.perf_counter() - t0, losses[0], losses[-1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", required=True, choices=sorted(PRESETS))
    ap.add_argument("--mode", required=True, choices=["eager", "compile"])
    ap.add_argument("--batch", type=int, default=0)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=0.0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    C, L, H, KV, F, V, B0 = PRESETS[a.preset]
    B, T = a.batch or B0, a.seq
    dev = torch.cuda.get_device_name(0)
    peak = a.peak_tflops * 1e12 if a.peak_tflops > 0 else (312e12 if "A100" in dev else 989e12)
    cfg = LlamaConfig(vocab_size=V, hidden_size=C, intermediate_size=F, num_hidden_layers=L,
                      num_attention_heads=H, num_key_value_heads=KV, max_position_embeddings=T,
                      rms_norm_eps=1e-5, tie_word_embeddings=False, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg)
    model.train()
    n_total = sum(p.numel() for p in model.parameters())
    n_nonemb = n_total - 2 * V * C  # neither the embedding table nor the LM head
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=True)
    fwd = torch.compile(model) if a.mode == "compile" else model

    micro, accum, note = B, 1, ""
    while True:
        try:
            torch.cuda.reset_peak_memory_stats()
            dt, l0, l1 = run(fwd, opt, micro, accum, T, V, a.steps, a.warmup)
            break
        except torch.OutOfMemoryError:
            if micro == 1:
                raise
            opt.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            micro, accum = micro // 2, accum * 2
            note = f"out of memory at micro-batch {micro * 2}: {micro} x {accum} accumulated"
            print(note, flush=True)

    flops_tok = 6.0 * n_nonemb + 6.0 * L * T * C  # d_attn = heads * head dim = C
    tps = B * T * a.steps / dt
    mfu = tps * flops_tok / peak
    peak_mem = torch.cuda.max_memory_allocated() / 2**30
    impl = f"torch-{a.mode}"
    print(f"{impl} {a.preset} on {dev}: B {B} x T {T}, {n_total / 1e6:.1f}M params "
          f"({n_nonemb / 1e6:.1f}M non-embedding), {a.steps} steps in {dt:.2f} s: {tps:.0f} "
          f"tokens/s, {1e3 * dt / a.steps:.1f} ms/step, MFU {100 * mfu:.1f}%, peak memory "
          f"{peak_mem:.2f} GiB, loss {l0:.3f} -> {l1:.3f} {note}", flush=True)
    if a.json:
        rec = dict(impl=impl, preset=a.preset, device=dev, B=B, T=T, micro_batch=micro,
                   grad_accum=accum, steps=a.steps, params=n_total, params_nonembed=n_nonemb,
                   flops_per_token=flops_tok, tokens_per_s=round(tps, 1),
                   step_ms=round(1e3 * dt / a.steps, 2), mfu=round(mfu, 4),
                   peak_tflops=peak / 1e12, peak_mem_gib=round(peak_mem, 3),
                   loss_first=round(l0, 4), loss_last=round(l1, 4),
                   torch=torch.__version__, note=note)
        with open(a.json, "a") as f:
            f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
