#!/usr/bin/env python3
"""MMLU's acc and stderr as lm-eval aggregates them, computed with lm-eval's own
functions (mean, mean_stderr, pooled_sample_stderr) from lm-eval's per-document
log-likelihoods (compare_lm_eval.py's lm_samples_TAG.jsonl; gold from postshare's
samples), subjects grouped by the tag of lm-eval's mmlu_<subject>.yaml, then
printed beside postshare's --out JSON (experiments/task-eval.md).

usage: mmlu_stderr_lm.py LM_SAMPLES OURS_SAMPLES OURS_JSON"""
import collections
import json
import os
import sys

import lm_eval
import yaml
from lm_eval.api.metrics import mean, mean_stderr, pooled_sample_stderr

lm_path, ours_path, ours_json = sys.argv[1:4]
gold = {}
for line in open(ours_path):
    r = json.loads(line)
    gold[(r["group"], r["doc"])] = r["gold"]
acc = collections.defaultdict(list)
for line in open(lm_path):
    s = json.loads(line)
    ll = s["ll"]
    acc[s["group"]].append(float(max(range(len(ll)), key=ll.__getitem__) == gold[(s["group"], s["doc"])]))
d = os.path.join(os.path.dirname(lm_eval.__file__), "tasks/mmlu/default")
cat = {s: yaml.safe_load(open(f"{d}/mmlu_{s}.yaml"))["tag"][5:-6] for s in acc}
cats = collections.defaultdict(list)
for s in sorted(acc):
    cats[cat[s]].append(s)


def se(x):  # lm-eval: stderr only with more than one item, else "N/A"
    return mean_stderr(x) if len(x) > 1 else "N/A"


def pool(ses, sizes):
    return "N/A" if "N/A" in ses else pooled_sample_stderr(ses, sizes)


ours = {r["task"]: r for r in json.load(open(ours_json))["results"]}["mmlu"]
rows, cse, cn = [], [], []
for c, subs in cats.items():
    allc = sum((acc[s] for s in subs), [])
    e = pool([se(acc[s]) for s in subs], [len(acc[s]) for s in subs])
    cse.append(e)
    cn.append(len(allc))
    o = ours["categories"][c]
    print(f"mmlu_{c:16s} n {len(allc):4d}  acc lm-eval {mean(allc):.6f} postshare {o['acc']:.6f}  "
          f"stderr lm-eval {e if e == 'N/A' else f'{e:.6f}'} postshare {o['acc_stderr']}")
allv = sum(acc.values(), [])
e = pool(cse, cn)
print(f"mmlu{'':17s} n {len(allv):4d}  acc lm-eval {mean(allv):.6f} postshare {ours['acc']:.6f}  "
      f"stderr lm-eval {e if e == 'N/A' else f'{e:.6f}'} postshare {ours['acc_stderr']}")
