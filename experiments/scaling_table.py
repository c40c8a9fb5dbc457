#!/usr/bin/env python3
"""Every number in docs/scaling.md: memory per GPU, communication, and sharing savings.

Usage: python3 experiments/scaling_table.py   (stdlib only; prints markdown tables)

The formulas follow the code as of this writing:
  parameter layout    trainer/params.c (docs/design.md "The parameter table")
  ZeRO-1 shards       trainer/zero.c   (shard = ceil(P/N) rounded up to 64; buffers padded to N*shard)
  optimizer state     trainer/optim.c  (fp32 master, m, v of this rank's [lo, hi) only)
  activations         trainer/model.c  model_reserve (Activations in trainer/model.h)
  attention state     cuda/cuda_attention.cu cuda_attn_state_bytes: lse + D, fp32 [B, nh, T]
  classifier scratch  cuda/cuda_ops.cu (64 Mi-logit chunks; fp32 [V, C] head-grad accumulator
                      when there is more than one chunk); cuda_scratch adds 25% headroom
  cuBLASLt workspace  cuda/cuda_matmul.cu (32 MiB)
Rows marked as estimates (ZeRO-2/3, TP, PP) describe designs PostShare does not implement.
"""

import math

GiB = 1024**3
GB = 1e9

# ---------------------------------------------------------------- assumptions
E = 2                     # bytes per bf16 element (params, grads, activations on the GPU)
B, T = 1, 4096            # micro-batch and sequence length (Llama 2's context)
GLOBAL_TOKENS = 1024 * T  # 4,194,304 tokens per optimizer step (Llama 2's 4M-token batch)
PEAK = 989e12             # H100 SXM dense bf16 FLOP/s
MFU = 0.5
NVLINK = 450e9            # bytes/s per GPU per direction, NVLink 4 (H100 SXM), used as bus bandwidth
HBM = 3.35e12             # bytes/s, H100 SXM HBM3
IB = 50e9                 # bytes/s per GPU, InfiniBand NDR 400 Gb/s, one NIC per GPU
H100_GIB = 81559 * 2**20 / GiB  # 80 GB H100 as nvidia-smi reports it (81559 MiB)
RESERVE_GIB = 2.0         # assumed: CUDA context, NCCL buffers, allocator slack (not modeled)
USABLE_GIB = H100_GIB - RESERVE_GIB
GPUS = (4, 8, 16)
NODE = 8                  # GPUs per NVLink domain (one HGX/DGX H100 node)
SHARD_ALIGN = 64
SCRATCH_HEADROOM = lambda b: b + b // 4  # cuda_scratch allocates bytes + bytes/4
CLASSIFIER_CHUNK = 64 << 20              # logits per chunk
CUBLASLT_WS = 32 << 20

MODELS = {  # Hugging Face configs of Llama-2 (untied embeddings, hd = 128)
    "7B": dict(L=32, C=4096, nh=32, nkv=32, F=11008, V=32000),
    "13B": dict(L=40, C=5120, nh=40, nkv=40, F=13824, V=32000),
    "70B": dict(L=80, C=8192, nh=64, nkv=8, F=28672, V=32000),
}
for m in MODELS.values():
    m["hd"] = m["C"] // m["nh"]
    m["qd"] = m["nh"] * m["hd"]
    m["kvd"] = m["nkv"] * m["hd"]


def gib(b):
    return f"{b / GiB:.1f}"


def gb(b):
    return f"{b / GB:.1f}"


def ms(s):
    return f"{s * 1e3:,.0f} ms" if s < 10 else f"{s:,.1f} s"


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    print("\n".join(out) + "\n")


# ---------------------------------------------------------------- parameters
def layer_params(m):
    C = m["C"]
    attn = m["qd"] * C + 2 * m["kvd"] * C + C * m["qd"]
    mlp = 3 * m["F"] * C
    return attn, mlp, 2 * C


def params(m):
    attn, mlp, norms = layer_params(m)
    embed = m["V"] * m["C"]
    return embed + m["L"] * (attn + mlp + norms) + m["C"] + embed  # + final norm + lm_head


def shard(P, N):
    s = -(-P // N)
    return -(-s // SHARD_ALIGN) * SHARD_ALIGN


# ---------------------------------------------------------------- activations
def acts(m, recompute, B=B, T=T):
    """Bytes model_reserve allocates on the CUDA backend, plus the backend's scratch."""
    L, C, F, V, qd, kvd, nh = m["L"], m["C"], m["F"], m["V"], m["qd"], m["kvd"], m["nh"]
    BT = B * T
    per_layer = (3 * BT * C * E          # x_mid, ln1, ln2
                 + 2 * BT * 4            # rstd1, rstd2 (fp32)
                 + 2 * BT * qd * E       # q, ao
                 + 2 * BT * kvd * E      # k, v
                 + 2 * 4 * B * nh * T    # attention state: lse, D (fp32)
                 + 3 * BT * F * E)       # gate, up, h
    R = min(BT, max(1, CLASSIFIER_CHUNK // V))
    parts = {
        "x": (L + 1) * BT * C * E,                       # residual stream, kept with recompute too
        "layers": (1 if recompute else L) * per_layer,
        "head": BT * C * E + BT * 4 + 3 * BT * 4,        # lnf, rstdf, losses, tokens, targets
        "bwd": 2 * BT * C * E + 2 * BT * qd * E + 2 * BT * kvd * E + 3 * BT * F * E,
        "cls": SCRATCH_HEADROOM(R * V * E) + (SCRATCH_HEADROOM(V * C * 4) if R < BT else 0),
    }
    chunks = min(512, -(-BT // 32))
    chunks = -(-BT // -(-BT // chunks))
    parts["misc"] = SCRATCH_HEADROOM(chunks * C * 4) + CUBLASLT_WS  # RMSNorm dw partials, cuBLASLt
    parts["per_layer"] = per_layer
    parts["total"] = sum(v for k, v in parts.items() if k != "per_layer")
    return parts


def zero1(m, N):
    P = params(m)
    s = shard(P, N)
    return dict(P=P, shard=s, params=N * s * E, grads=N * s * E, opt=12 * s)


def zero3_layers(m):
    """ZeRO-3 working set beyond the shards: the gathered bf16 params of the running and
    the prefetched layer, and one layer's full bf16 gradient before its reduce-scatter."""
    attn, mlp, norms = layer_params(m)
    return 3 * (attn + mlp + norms) * E


def fits(total):
    spare = USABLE_GIB - total / GiB
    return "**no**" if spare < 0 else ("edge" if spare < 2 else "yes")


def step_compute_s(P, ngpu, tokens=GLOBAL_TOKENS):
    return 6 * P * tokens / (ngpu * PEAK * MFU)


def main():
    print(f"<!-- generated by experiments/scaling_table.py: B={B}, T={T}, "
          f"global batch {GLOBAL_TOKENS} tokens, bf16 = {E} bytes -->\n")

    print("### Parameter counts\n")
    rows = []
    for name, m in MODELS.items():
        attn, mlp, norms = layer_params(m)
        P = params(m)
        rows.append([name, f"L{m['L']} C{m['C']} heads {m['nh']}/{m['nkv']} F{m['F']}",
                     f"{attn:,}", f"{mlp:,}", f"{m['V'] * m['C']:,} x 2",
                     f"{P:,}", gib(P * E), gib(16 * P)])
    table(["model", "shape", "attn / layer", "MLP / layer", "embed + lm_head",
           "total P", "bf16 P (GiB)", "16 P (GiB)"], rows)
    print("Attention (Wq, Wk, Wv, Wo) is " + ", ".join(
        f"{100 * m['L'] * layer_params(m)[0] / params(m):.1f}% ({name})"
        for name, m in MODELS.items()) + " of the parameters.\n")

    print(f"### Activations per GPU (micro-batch {B} x {T}, CUDA backend)\n")
    rows = []
    for name, m in MODELS.items():
        a, r = acts(m, False), acts(m, True)
        rows.append([name, gib(a["per_layer"]), gib(a["x"]), gib(a["bwd"]),
                     gib(a["cls"]), gib(a["head"] + a["misc"]), gib(a["total"]), gib(r["total"])])
    table(["model", "one layer's saved", "x[0..L]", "bwd scratch", "classifier scratch",
           "lnf, losses, misc", "total, no recompute", "total, recompute"], rows)
    extra = []
    for name, m in MODELS.items():
        attn, mlp, norms = layer_params(m)
        # the recomputed forward skips the down projection: 2 FLOPs per weight per token
        extra.append(f"{100 * 2 * m['L'] * (attn + mlp - m['F'] * m['C']) / (6 * params(m)):.0f}% ({name})")
    m = MODELS["70B"]
    a = acts(m, False)
    print(f"Recomputation adds {', '.join(extra)} to the 6P matmul FLOPs per token. Without it, "
          f"70B's {m['L']} layers of saved tensors are {gib(a['layers'])} of its "
          f"{gib(a['total'])} GiB.\n")

    print("### ZeRO-1 memory per GPU (GiB)\n")
    rows = []
    for name, m in MODELS.items():
        a, r = acts(m, False)["total"], acts(m, True)["total"]
        for N in GPUS:
            z = zero1(m, N)
            states = z["params"] + z["grads"] + z["opt"]
            rows.append([name, N, gib(z["params"]), gib(z["grads"]), gib(z["opt"]),
                         gib(a), gib(r), gib(states + a), fits(states + a),
                         gib(states + r), fits(states + r)])
    table(["model", "GPUs", "bf16 params", "bf16 grads", "fp32 master+m+v (1/N)",
           "acts", "acts (rc)", "total", "fits", "total (rc)", "fits (rc)"], rows)
    print(f"Fits: total <= {USABLE_GIB:.1f} GiB ({H100_GIB:.1f} GiB of an 80 GB H100 "
          f"less an assumed {RESERVE_GIB:.0f} GiB for context, NCCL and slack); "
          f"edge: less than 2 GiB below that.\n")

    print("### Host memory (fp32 copies kept by train.c)\n")
    rows = []
    for name, m in MODELS.items():
        P = params(m)
        z = zero1(m, NODE)
        gather = 12 * P + 4 * NODE * z["shard"]  # rank 0: master, m, v + the gather buffer
        # every rank loads w (and w0 with PostShare); ranks > 0 free them before step 1
        rows.append([name, gib(4 * P), gib(8 * P), gib(NODE * 4 * P), gib(NODE * 8 * P),
                     gib(4 * P + gather), gib(8 * P + gather)])
    table(["model", "each rank at load", "same, PostShare", f"{NODE}-rank node at load",
           "same, PostShare", "rank 0 at a checkpoint", "same, PostShare"], rows)

    print(f"### Communication per optimizer step ({GLOBAL_TOKENS:,} tokens)\n")
    rows = []
    for name, m in MODELS.items():
        for N in GPUS:
            z = zero1(m, N)
            vol = 2 * (N - 1) * z["shard"] * E        # reduce-scatter + all-gather, bytes sent per GPU
            ddp = 2 * (N - 1) / N * z["P"] * E        # ring all-reduce of the unpadded gradient
            comp = step_compute_s(z["P"], N)
            bw, link = (NVLINK, "NVLink") if N <= NODE else (IB, "IB")
            rows.append([name, N, gb(vol), gb(ddp), ms(vol / NVLINK), ms(vol / IB),
                         ms(comp), f"{100 * vol / bw / comp:.2f}% ({link})"])
    table(["model", "GPUs", "ZeRO-1 GB/GPU", "DDP GB/GPU", "at 450 GB/s", "at 50 GB/s",
           "compute (50% MFU)", "comm / compute"], rows)
    be = []
    for N in GPUS:
        bw = NVLINK if N <= NODE else IB
        # comm = compute when 4 (N-1)/N P / bw = 6 P tok / (N PEAK MFU)
        be.append(f"{4 * (N - 1) * PEAK * MFU / (6 * bw):,.0f} (N={N})")
    print(f"Communication equals compute at {', '.join(be)} tokens per step, for every "
          f"model size.\n")

    print("### Past ZeRO-1: model states per GPU and communication per micro-batch\n")
    rows = []
    A = {N: GLOBAL_TOKENS // (B * T) // N for N in GPUS}  # micro-batches per GPU per step
    for name, m in MODELS.items():
        r = acts(m, True)["total"]
        gather = zero3_layers(m)
        for N in GPUS:
            z = zero1(m, N)
            s, Pp = z["shard"], N * z["shard"]
            z1 = 4 * Pp + 12 * s
            z2 = 2 * Pp + 14 * s
            z3 = 16 * s
            bw = NVLINK if N <= NODE else IB
            mb = 6 * z["P"] * B * T / (PEAK * MFU)           # compute of one micro-batch
            one = (N - 1) * s * E / bw                       # one reduce-scatter or all-gather
            rows.append([name, N, gib(z1), gib(z2), gib(z3),
                         f"{gib(z3 + r + gather)} ({fits(z3 + r + gather)})",
                         f"{2 * one / A[N] / mb:.3f}", f"{(one + one / A[N]) / mb:.2f}",
                         f"{3 * one / mb:.2f}"])
    table(["model", "GPUs", "ZeRO-1 states", "ZeRO-2 states", "ZeRO-3 states",
           "ZeRO-3 + acts (rc) + 3 layers", "Z1 comm/compute", "Z2", "Z3"], rows)
    print(f"Comm/compute is per micro-batch ({B} x {T}) with gradient accumulation over "
          f"{', '.join(f'{A[N]} (N={N})' for N in GPUS)} micro-batches per GPU; NVLink for "
          f"N <= {NODE}, IB above; no overlap assumed. ZeRO-3 over IB at N=16 breaks even at "
          f"{math.ceil(3 * 15 / 16 * E * PEAK * MFU / (6 * T * IB))} sequences per micro-batch.\n")

    print("### Tensor parallelism (Megatron) per micro-batch\n")
    rows = []
    for name, m in MODELS.items():
        msg = B * T * m["C"] * E
        for t, bw, link in ((8, NVLINK, "NVLink"), (16, IB, "IB")):
            vol = 4 * m["L"] * 2 * (t - 1) / t * msg       # 4 all-reduces / layer, ring
            comp = 6 * params(m) * B * T / t / (PEAK * MFU)
            rows.append([name, t, link, f"{msg / 2**20:.0f} MiB", gb(vol), ms(vol / bw),
                         ms(comp), f"{100 * vol / bw / comp:.0f}%"])
    table(["model", "TP", "link", "all-reduce msg", "GB/GPU", "comm time", "compute",
           "comm / compute"], rows)

    print("### Llama-2-70B on 16 H100 80GB (estimates)\n")
    m = MODELS["70B"]
    P = params(m)
    r = acts(m, True)
    mb = 6 * P * B * T / (PEAK * MFU)
    msg = B * T * m["C"] * E
    tp_comm = 4 * m["L"] * 2 * 7 / 8 * msg / NVLINK     # TP8 inside a node, per micro-batch
    # activations under TP t with sequence parallelism: every saved tensor split t ways
    # (estimate: acts(recompute)/t); PP p with 1F1B keeps up to p micro-batches of x on stage 0
    rows = []

    def opt(label, states, act, comm_s, comp_s, note):
        tot = states + act
        rows.append([label, gib(states), gib(act), gib(tot), fits(tot),
                     f"{comm_s / comp_s:.2f}", note])

    z1 = zero1(m, 16)
    s16 = z1["shard"]
    A16 = GLOBAL_TOKENS // (B * T) // 16   # micro-batches per GPU per step, DP 16
    A2 = GLOBAL_TOKENS // (B * T) // 2     # per TP group, DP 2
    one16 = 15 * s16 * E / IB              # one reduce-scatter or all-gather over 16 ranks
    opt("ZeRO-1, DP 16 (today)", 4 * 16 * s16 + 12 * s16, r["total"],
        2 * one16 / A16, mb, "bf16 params alone are " + gib(P * E) + " GiB")
    opt("ZeRO-2, DP 16", 2 * 16 * s16 + 14 * s16, r["total"],
        one16 * (1 + 1 / A16), mb, "bf16 params still replicated")
    opt("ZeRO-3 / FSDP, DP 16", 16 * s16, r["total"] + zero3_layers(m),
        3 * one16, mb, "micro-batch 1 only; IB-bound")
    s2 = shard(-(-P // 8), 2)              # a TP rank's 1/8 of the model, sharded over DP 2
    one2 = s2 * E / IB                     # one reduce-scatter or all-gather over 2 ranks
    opt("TP 8 x ZeRO-1 DP 2", 2 * 2 * s2 * E + 12 * s2, r["total"] / 8,
        tp_comm + 2 * one2 / A2, mb / 8, "")
    opt("TP 8 x ZeRO-2 DP 2", 2 * s2 * E + s2 * E + 12 * s2, r["total"] / 8,
        tp_comm + one2 * (1 + 1 / A2), mb / 8, "")
    opt("TP 8 x ZeRO-3 DP 2", 16 * s2, r["total"] / 8 + zero3_layers(m) / 8,
        tp_comm + 3 * one2, mb / 8, "")
    stage = -(-P // 16) * 16               # each GPU: 1/16 of the model with its full AdamW state
    pp_act = (2 * (m["L"] // 2 + 1) * B * T * m["C"] * E + r["layers"] + r["bwd"] + r["cls"]
              + r["head"] + r["misc"]) / 8
    M_ = GLOBAL_TOKENS // (B * T)
    opt("TP 8 x PP 2 (no DP)", stage, pp_act, tp_comm + 2 * msg / IB, mb / 8,
        f"bubble {100 / (M_ + 1):.1f}% at {M_} micro-batches")
    spare = (16 * USABLE_GIB * GiB - 16 * P) / 16
    print(f"16 GPUs hold {16 * USABLE_GIB:.0f} GiB usable; 16 P = {gib(16 * P)} GiB of model "
          f"states leaves {gib(spare)} GiB per GPU.\n")
    table(["layout", "model states", "acts (rc) + buffers", "total", "fits",
           "comm / compute", "note"], rows)

    print("### Sharing: parameters saved by a compact shared model\n")
    rows = []
    for name, m in MODELS.items():
        G = m["nh"] // m["nkv"]
        unit = (2 * G + 2) * m["hd"] * m["C"]
        U = m["nkv"]
        P = params(m)
        scratch = (2 * m["qd"] + 2 * m["kvd"]) * m["C"]      # one layer's Wq|Wk|Wv|Wo (inference)
        row = [name, f"{m['L']} x {U} {'heads' if G == 1 else 'KV groups'}", f"{unit:,}"]
        for ratio in (0.1, 0.3, 0.5):
            k = math.floor(round(ratio * m["L"] * U, 9))
            saved = k * unit
            row.append(f"{k} units: {saved / 1e9:.2f}B ({100 * saved / P:.1f}%), "
                       f"{gib(saved * E)} GiB bf16")
        row.append(f"{scratch * E / 2**20:.0f} MiB")
        rows.append(row)
    table(["model", "units", "params / unit", "ratio 0.1", "ratio 0.3", "ratio 0.5",
           "inference scratch (bf16)"], rows)
    m = MODELS["7B"]
    k = math.floor(round(0.3 * m["L"] * m["nkv"], 9))
    S = k * 4 * m["hd"] * m["C"]
    traffic = 3 * 2 * S * E   # both slices of every pair: params read, grads read + written
    print(f"- 7B at ratio 0.3, regularizer on rank 0: {2 * S * E / GB:.2f} GB of paired bf16 "
          f"params, about {traffic / GB:.1f} GB of HBM traffic, {traffic / HBM * 1e3:.1f} ms at "
          f"{HBM / 1e12:.2f} TB/s, plus {k} gradient launches.")
    for N in (8,):
        print(f"- 7B at ratio 0.3, if a compact model were trained under ZeRO-1 at N={N}: "
              f"{(4 * S + 12 * S / N) / GiB:.2f} GiB less per GPU "
              f"(bf16 params + grads {4 * S / GiB:.2f}, optimizer shard {12 * S / N / GiB:.2f}).")
    print()


if __name__ == "__main__":
    main()
