"""experiments/cpu_vs_torch.py: PostShare's CPU backend against PyTorch on the CPU.

Run through experiments/cpu_vs_torch.sh (it builds PostShare and picks the
Python with torch and transformers: TORCH_PYTHON). Measures, interleaving the
implementations round by round:

  train  the same LLaMA (transformers' LlamaForCausalLM with sdpa attention in
         PyTorch eager and under torch.compile; `postshare train`), the same
         batch and AdamW (betas 0.9/0.95, wd 0.1 on matrices, clip 1.0), random
         tokens; steady-state tokens/s over the steps after the warm-up, and
         peak RSS of the process; configs/25m.yaml, configs/default.yaml and
         SmolLM2-135M's shape (30 layers, 576 wide, 9 heads / 3 KV heads, ffn
         1536, vocab 49152, tied), at 1 and 2 threads.
  eval   SmolLM2-135M's shape (random weights, HF fp32 directory) at B8 x T256:
         `postshare eval` against transformers under torch.no_grad().
  gen    `postshare generate` of 256 tokens with and without the KV cache.

Each measurement runs in a fresh process; the 1-minute load average is
recorded next to it (the machine may be shared). tok_s is wall-clock; tok_cpu_s
divides the same tokens by the CPU time of the process over those steps (all
threads): on a busy machine it is the steadier figure. Results: a JSON line per
measurement on stdout and in OUT/results.jsonl.
"""
import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

MODELS = {
    # name: (dim, layers, heads, kv heads, ffn, vocab, tied, B, T)
    "25m": (512, 8, 8, 8, 1376, 256, False, 8, 256),
    "default": (128, 4, 4, 4, 352, 256, False, 16, 128),
    "smollm2": (576, 30, 9, 3, 1536, 49152, True, 4, 256),
}
LR, BETAS, WD, EPS, CLIP = 3e-4, (0.9, 0.95), 0.1, 1e-8, 1.0


def load1():
    return os.getloadavg()[0]


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def hf_config(name, max_len=None):
    from transformers import LlamaConfig

    C, L, nh, nkv, F, V, tied, B, T = MODELS[name]
    return LlamaConfig(vocab_size=V, hidden_size=C, intermediate_size=F, num_hidden_layers=L,
                       num_attention_heads=nh, num_key_value_heads=nkv,
                       max_position_embeddings=max_len or max(T, 512), rms_norm_eps=1e-5,
                       rope_theta=10000.0, tie_word_embeddings=tied, attention_bias=False,
                       mlp_bias=False, hidden_act="silu")


# ---------------------------------------------------------------- workers (one process each)

def worker_torch_train(name, impl, threads, warmup, steps):
    import torch
    import torch.nn.functional as Fn
    from transformers import LlamaForCausalLM

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    C, L, nh, nkv, F, V, tied, B, T = MODELS[name]
    model = LlamaForCausalLM(hf_config(name), ).float()
    model.config._attn_implementation = "sdpa"
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    other = [p for n, p in model.named_parameters() if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD},
                             {"params": other, "weight_decay": 0.0}], lr=LR, betas=BETAS,
                            eps=EPS)
    fwd = torch.compile(model) if impl == "compile" else model
    g = torch.Generator().manual_seed(1)

    def step():
        x = torch.randint(0, V, (B, T + 1), generator=g)
        logits = fwd(input_ids=x[:, :-1]).logits
        loss = Fn.cross_entropy(logits.reshape(-1, V), x[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    t0 = time.time()
    for _ in range(warmup):
        step()
    t1, c1 = time.time(), time.process_time()
    for _ in range(steps):
        step()
    t2, c2 = time.time(), time.process_time()
    n = sum(p.numel() for p in model.parameters())
    return {"params": n, "tok_s": steps * B * T / (t2 - t1),
            "tok_cpu_s": steps * B * T / (c2 - c1), "warmup_s": t1 - t0,
            "rss_mb": peak_rss_mb()}


def worker_torch_eval(model_dir, threads, batches, shard):
    import torch
    from transformers import LlamaForCausalLM

    torch.set_num_threads(threads)
    model = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32,
                                             attn_implementation="sdpa")
    model.eval()
    B, T = 8, 256
    toks = read_shard(shard)
    t0, c0, ntok, nll = time.time(), time.process_time(), 0, 0.0
    with torch.no_grad():
        for i in range(batches):
            chunk = toks[i * B * (T + 1):(i + 1) * B * (T + 1)].reshape(B, T + 1)
            x = torch.from_numpy(chunk.astype(np.int64))
            out = model(input_ids=x[:, :-1], labels=None)
            nll += torch.nn.functional.cross_entropy(
                out.logits.reshape(-1, out.logits.shape[-1]), x[:, 1:].reshape(-1),
                reduction="sum").item()
            ntok += B * T
    t1, c1 = time.time(), time.process_time()
    return {"tok_s": ntok / (t1 - t0), "tok_cpu_s": ntok / (c1 - c0), "loss": nll / ntok,
            "rss_mb": peak_rss_mb()}


# ---------------------------------------------------------------- helpers

def write_shard(path, tokens):
    header = np.zeros(256, dtype=np.int32)
    header[0], header[1], header[2] = 20240520, 1, len(tokens)
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype(np.uint16).tobytes())


def read_shard(path):
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(1024), dtype=np.int32)
        return np.frombuffer(f.read(), dtype=np.uint16)[:header[2]]


def run_timed(cmd, env):
    """Run cmd under /usr/bin/time; returns (stdout, peak RSS MiB, wall s); the
    process's CPU time (user + sys, s) goes to run_timed.cpu_s."""
    with tempfile.NamedTemporaryFile(mode="r", suffix=".time") as tf:
        t0 = time.time()
        p = subprocess.run(["/usr/bin/time", "-f", "%U %S %M", "-o", tf.name] + cmd, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           errors="replace")
        wall = time.time() - t0
        if p.returncode != 0:
            sys.exit("failed (%d): %s\n%s" % (p.returncode, " ".join(cmd), p.stdout[-3000:]))
        u, s, m = tf.read().strip().splitlines()[-1].split()
        rss = int(m) / 1024.0
        run_timed.cpu_s = float(u) + float(s)
    return p.stdout, rss, wall


def thread_env(threads):
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def ps_train(args, name, threads, workdir):
    C, L, nh, nkv, F, V, tied, B, T = MODELS[name]
    out = tempfile.mkdtemp(dir=workdir)
    steps = args.warmup + args.steps[name]
    cmd = [args.postshare, "train", os.path.join(args.root, "configs",
                                                  ("25m" if name == "smollm2" else name) + ".yaml"),
           "--set", f"run.out_dir={out}", "--set", f"threads={threads}",
           "--set", f"train.steps={steps}", "--set", "train.log_every=1",
           "--set", "train.eval_every=0", "--set", "train.save_final=false",
           "--set", "checkpoint.every=0", "--set", "checkpoint.keep=1",
           # no checkpoint at the end either: the torch runs save nothing
           "--set", "checkpoint.final=false",
           "--set", f"data.train={workdir}/rand{V}_train_*.bin",
           "--set", f"data.val={workdir}/rand{V}_val_*.bin", "--set", "data.val_batches=1",
           "--set", f"data.batch_size={B}", "--set", f"data.seq_len={T}",
           "--set", f"model.dim={C}", "--set", f"model.n_layers={L}",
           "--set", f"model.n_heads={nh}", "--set", f"model.n_kv_heads={nkv}",
           "--set", f"model.ffn_dim={F}", "--set", f"model.vocab_size={V}",
           "--set", f"model.max_seq_len={max(T, 256)}",
           "--set", f"model.tie_embeddings={'true' if tied else 'false'}",
           "--set", f"train.lr={LR}", "--set", f"train.weight_decay={WD}",
           "--set", f"train.clip={CLIP}", "--set", "train.warmup=0"]
    if name != "smollm2":
        cmd += ["--set", "data.tokenizer=byte"] if name == "default" else []
    stdout, rss, _ = run_timed(cmd, thread_env(threads))
    rows = [json.loads(l) for l in open(os.path.join(out, os.listdir(out)[0], "metrics.jsonl"))
            if '"tokens_per_s"' in l]
    rows = {r["step"]: r for r in rows}
    e0, e1 = rows[args.warmup]["elapsed_s"], rows[steps]["elapsed_s"]
    c0, c1 = rows[args.warmup]["cpu_s"], rows[steps]["cpu_s"]
    params = int(re.search(r"(\d+) parameters", stdout).group(1))
    subprocess.run(["rm", "-rf", out])
    ntok = args.steps[name] * B * T
    return {"params": params, "tok_s": ntok / (e1 - e0), "tok_cpu_s": ntok / (c1 - c0),
            "rss_mb": rss}


def torch_worker(args, spec, threads):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    stdout, _, _ = run_timed(cmd, thread_env(threads))
    return json.loads(stdout.strip().splitlines()[-1])


def make_data(workdir, V):
    rng = np.random.default_rng(0)
    for split, n in (("train", 400000), ("val", 60000)):
        path = os.path.join(workdir, f"rand{V}_{split}_000.bin")
        if not os.path.exists(path):
            write_shard(path, rng.integers(0, V, n))


def record(res, outf, **kw):
    kw.update(res)
    kw["load1"] = round(load1(), 2)
    kw["time"] = time.strftime("%H:%M:%S")
    line = json.dumps(kw)
    print(line, flush=True)
    outf.write(line + "\n")
    outf.flush()


def table(path):
    """A markdown table of results.jsonl."""
    print("| what | model | threads | impl | tok/s (wall) | tok per CPU-s | peak RSS MiB | "
          "load1 | other |")
    print("|---|---|---|---|---|---|---|---|---|")
    for line in open(path):
        r = json.loads(line)
        other = ", ".join(f"{k} {r[k]:.4g}" if isinstance(r[k], float) else f"{k} {r[k]}"
                          for k in ("params", "loss", "weights_mb", "wall_s", "cpu_s",
                                    "cpu_s_total", "new_tokens") if k in r)
        f = lambda k: f"{r[k]:.0f}" if k in r else "-"
        print(f"| {r['what']} | {r['model']} | {r['threads']} | {r['impl']} | {f('tok_s')} | "
              f"{f('tok_cpu_s')} | {f('rss_mb')} | {r['load1']} | {other} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--table", help="print results.jsonl (this path) as a markdown table")
    ap.add_argument("--worker")
    ap.add_argument("--postshare", default="build/postshare")
    ap.add_argument("--out", default="experiments/cpu-vs-torch")
    ap.add_argument("--what", default="train,eval,gen")
    ap.add_argument("--models", default="default,25m,smollm2")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--impls", default="postshare,eager,compile")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps-default", type=int, default=30)
    ap.add_argument("--steps-25m", type=int, default=6)
    ap.add_argument("--steps-smollm2", type=int, default=3)
    ap.add_argument("--eval-batches", type=int, default=4)
    ap.add_argument("--smollm2-batch", type=int, default=4, help="B of the SmolLM2 train runs")
    ap.add_argument("--gen-model", default="smollm2", help="shape of the generate model")
    ap.add_argument("--gen-steps", type=int, default=256)
    ap.add_argument("--gen-modes", default="cache,nocache")
    args = ap.parse_args()
    if args.table:
        return table(args.table)
    if args.worker:
        spec = json.loads(args.worker)
        kind = spec.pop("kind")
        res = worker_torch_train(**spec) if kind == "train" else worker_torch_eval(**spec)
        print(json.dumps(res))
        return
    C, L, nh, nkv, F, V, tied, B, T = MODELS["smollm2"]
    MODELS["smollm2"] = (C, L, nh, nkv, F, V, tied, args.smollm2_batch, T)
    args.root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    args.postshare = os.path.abspath(args.postshare)
    args.steps = {"default": args.steps_default, "25m": args.steps_25m,
                  "smollm2": args.steps_smollm2}
    os.makedirs(args.out, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="cpu_vs_torch.")
    outf = open(os.path.join(args.out, "results.jsonl"), "a")
    what = args.what.split(",")
    threads_list = [int(t) for t in args.threads.split(",")]

    if "train" in what:
        for name in args.models.split(","):
            make_data(workdir, MODELS[name][5])
            for threads in threads_list:
                for rnd in range(args.rounds):
                    for impl in args.impls.split(","):
                        if impl == "postshare":
                            res = ps_train(args, name, threads, workdir)
                        else:
                            res = torch_worker(args, {"kind": "train", "name": name, "impl": impl,
                                                      "threads": threads,
                                                      "warmup": args.warmup,
                                                      "steps": args.steps[name]}, threads)
                        record(res, outf, what="train", model=name, impl=impl, threads=threads,
                               round=rnd)

    if "eval" in what or "gen" in what:
        from transformers import LlamaForCausalLM
        import torch
        make_data(workdir, 49152)
        mdir = os.path.join(workdir, "smollm2_hf")
        torch.manual_seed(0)
        m = LlamaForCausalLM(hf_config("smollm2", 2048))
        with torch.no_grad():
            for p in m.parameters():
                p.normal_(0.0, 0.02)
        m.save_pretrained(mdir, safe_serialization=True)
        wbytes = sum(p.numel() for p in m.parameters()) * 4
        del m
    if "eval" in what:
        shard = os.path.join(workdir, "rand49152_val_000.bin")
        for threads in threads_list:
            for rnd in range(args.rounds):
                out, rss, wall = run_timed([args.postshare, "eval", mdir, "--data", shard,
                                            "--batch-size", "8", "--seq-len", "256",
                                            "--batches", str(args.eval_batches), "--threads",
                                            str(threads)], thread_env(threads))
                m = re.search(r"val loss ([0-9.]+) .* ([0-9]+) tok/s", out)
                record({"tok_s": float(m.group(2)), "loss": float(m.group(1)), "rss_mb": rss,
                        "cpu_s_total": run_timed.cpu_s,
                        "weights_mb": wbytes / 2**20}, outf, what="eval", model="smollm2",
                       impl="postshare", threads=threads, round=rnd)
                res = torch_worker(args, {"kind": "eval", "model_dir": mdir, "threads": threads,
                                          "batches": args.eval_batches, "shard": shard}, threads)
                res["weights_mb"] = wbytes / 2**20
                record(res, outf, what="eval", model="smollm2", impl="transformers",
                       threads=threads, round=rnd)
    if "gen" in what:
        # generation needs a tokenizer of the model's vocabulary: the same shape with
        # the byte vocabulary (256), so the head is cheaper than SmolLM2's
        from transformers import LlamaForCausalLM
        import torch
        gdir = os.path.join(workdir, "smollm2_byte_hf")
        cfg = hf_config(args.gen_model, 2048)
        cfg.vocab_size = 256
        torch.manual_seed(0)
        m = LlamaForCausalLM(cfg)
        with torch.no_grad():
            for p in m.parameters():
                p.normal_(0.0, 0.02)
        m.save_pretrained(gdir, safe_serialization=True)
        del m
        threads = threads_list[-1]
        for rnd in range(args.rounds):
            for cache in [m == "cache" for m in args.gen_modes.split(",")]:
                cmd = [args.postshare, "generate", gdir, "--tokenizer", "byte", "--prompt",
                       "In the beginning", "--steps", str(args.gen_steps)] + ([] if cache else ["--no-cache"])
                out, rss, wall = run_timed(cmd, thread_env(threads))
                record({"wall_s": wall, "cpu_s": run_timed.cpu_s, "rss_mb": rss,
                        "new_tokens": args.gen_steps}, outf,
                       what="gen", model=args.gen_model + "-v256",
                       impl="postshare-cache" if cache else "postshare-nocache",
                       threads=threads, round=rnd)
    subprocess.run(["rm", "-rf", workdir])


if __name__ == "__main__":
    main()
