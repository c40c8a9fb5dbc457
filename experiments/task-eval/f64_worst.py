#!/usr/bin/env python3
"""The float64 reference for the choices where postshare and lm-eval (both fp32)
differ most: rerun exactly those lm-eval requests with the model in float64 and
print |fp32 - fp64| for both programs (experiments/task-eval.md).

usage: f64_worst.py --work DIR (compare_lm_eval.py's, with its task YAMLs)
         --lm-samples FILE --ours SAMPLES.jsonl --model DIR [--gguf FILE]
         [--tokenizer DIR] [--top N]
"""
import argparse
import json

ap = argparse.ArgumentParser()
ap.add_argument("--work", required=True)
ap.add_argument("--lm-samples", required=True)
ap.add_argument("--ours", required=True)
ap.add_argument("--model", required=True)
ap.add_argument("--gguf")
ap.add_argument("--tokenizer")
ap.add_argument("--top", type=int, default=12, help="the N largest differences of each task")
ap.add_argument("--limit", type=int, default=200)
a = ap.parse_args()

ours = {}
for line in open(a.ours):
    r = json.loads(line)
    ours[(r["task"], r["doc"])] = r
rows = []
for line in open(a.lm_samples):
    s = json.loads(line)
    if s["task"] == "mmlu":
        continue
    o = ours[(s["task"], s["doc"])]
    for i, (x, y) in enumerate(zip(s["ll"], o["ll"])):
        rows.append((abs(x - y), s["task"], s["doc"], i, x, y))
rows.sort(reverse=True)
# differences over 0.01 nats are not rounding (piqa's tokenizer cases): listed, not rerun
for r in rows:
    if r[0] > 0.01:
        print(f"skipped (not rounding): {r[1]} doc {r[2]} choice {r[3]}: |diff| {r[0]:.3g}")
worst = []
for t in sorted({r[1] for r in rows}):
    worst += [r for r in rows if r[0] <= 0.01 and r[1] == t][: a.top]

import torch
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager, get_task_dict

torch.set_num_threads(2)
tm = TaskManager(include_path=a.work)
tasks = sorted({t for _, t, *_ in worst})
td = get_task_dict([f"ps_{t}" for t in tasks], tm)
reqs = []
for t in tasks:
    task = td[f"ps_{t}"]
    task.build_all_requests(limit=a.limit, rank=0, world_size=1)
    for d, t2, doc, i, x, y in worst:
        if t2 != t:
            continue
        inst = [r for r in task.instances if r.doc_id == doc and r.idx == i]
        reqs.append(((t, doc, i, x, y), inst[0]))
lm = HFLM(pretrained=a.model, dtype="float64", device="cpu", batch_size=1, gguf_file=a.gguf,
          tokenizer=a.tokenizer)
res = lm.loglikelihood([r for _, r in reqs])
print(f"{'task':10s} {'doc':>4s} {'ch':>2s} {'fp64 ll':>14s} {'|lm32-fp64|':>11s} {'|ours-fp64|':>11s} {'|ours-lm32|':>11s}")
for ((t, doc, i, x, y), _), (ll, _g) in zip(reqs, res):
    print(f"{t:10s} {doc:4d} {i:2d} {ll:14.6f} {abs(x - ll):11.2e} {abs(y - ll):11.2e} {abs(x - y):11.2e}")
