#!/usr/bin/env python3
"""Run lm-evaluation-harness 0.4 on the same local task data and the same model
as `postshare eval --tasks`, and compare per-document log-likelihoods and
acc/acc_norm (experiments/task-eval.md).

lm-eval reads the data through task YAMLs generated here: each is lm-eval's own
task YAML (read from the installed package) with only the dataset swapped for
local JSON files (dataset_path: json + data_files), the files holding the same
documents as ../shared/data/eval converted to the fields the YAML expects. MMLU
becomes 57 subject tasks under one group (flat, weight_by_size).

usage: compare_lm_eval.py --model HF_DIR [--gguf FILE] --ours SAMPLES.jsonl[,...] --tasks LIST
           --limit N [--mmlu-limit N] [--num-fewshot K] --work DIR [--batch-size B]
Writes DIR/lm_eval_<tag>.json (metrics, timing) and prints the comparison.
"""
import argparse
import csv
import io
import json
import math
import os
import shutil
import sys
import time
import zipfile

import lm_eval
import yaml

LM_TASKS = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")
YAMLS = {
    "piqa": "piqa/piqa.yaml",
    "arc_easy": "arc/arc_easy.yaml",
    "openbookqa": "openbookqa/openbookqa.yaml",
    "boolq": "super_glue/boolq/default.yaml",
    "hellaswag": "hellaswag/hellaswag.yaml",
    "lambada": "lambada/lambada_openai.yaml",
}


def read_jsonl(p):
    return [json.loads(l) for l in open(p, encoding="utf-8") if l.strip()]


def write_jsonl(p, rows):
    with open(p, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def convert(task, data, out):
    """The local file as rows in the schema of lm-eval's HF dataset."""
    if task == "piqa":
        rows = read_jsonl(f"{data}/piqa/valid.jsonl")
        labels = [int(l) for l in open(f"{data}/piqa/valid-labels.lst")]
        return [dict(r, label=lab) for r, lab in zip(rows, labels)]
    if task in ("arc_easy", "openbookqa"):
        src = "arc_easy/arc_easy.jsonl" if task == "arc_easy" else "openbookqa/openbook_qa.jsonl"
        rows = []
        for r in read_jsonl(f"{data}/{src}"):
            labels = [chr(65 + i) for i in range(len(r["choices"]))]
            ch = {"text": r["choices"], "label": labels}
            if task == "arc_easy":
                q = r["query"][len("Question: "):] if r["query"].startswith("Question: ") else r["query"]
                rows.append({"question": q, "choices": ch, "answerKey": labels[r["gold"]]})
            else:
                rows.append({"question_stem": r["query"], "choices": ch, "answerKey": labels[r["gold"]]})
        return rows
    if task == "boolq":
        rows = []
        for r in read_jsonl(f"{data}/boolq/boolq.jsonl"):
            q = r["query"][len("Passage: "):]
            passage, question = q.rsplit("\nQuestion: ", 1)
            assert question.endswith("?")
            rows.append({"passage": passage, "question": question[:-1], "label": r["gold"]})
        return rows
    if task == "hellaswag":
        return read_jsonl(f"{data}/hellaswag/hellaswag.jsonl")
    if task == "lambada":
        return read_jsonl(f"{data}/lambada/lambada_test.jsonl")
    raise ValueError(task)


def split_name(cfg):
    return cfg.get("test_split") or cfg.get("validation_split")


def make_yaml(task, data, work):
    src = os.path.join(LM_TASKS, YAMLS[task])
    text = open(src).read()
    # keep the !function tag as text; we only rewrite the dataset keys
    cfg = yaml.load(text.replace("!function", "_function_"), Loader=yaml.SafeLoader)
    split = split_name(cfg)
    path = os.path.join(work, f"{task}.jsonl")
    write_jsonl(path, convert(task, data, work))
    cfg.update(task=f"ps_{task}", dataset_path="json", dataset_name=None,
               dataset_kwargs={"data_files": {split: path}})
    for k in ("training_split", "validation_split", "test_split"):
        cfg.pop(k, None)
    cfg["test_split"] = split
    cfg.pop("tag", None)
    out = yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True).replace("_function_", "!function")
    open(os.path.join(work, f"ps_{task}.yaml"), "w").write(out)
    if task == "hellaswag":  # its process_docs (lm-eval's own utils.py)
        shutil.copy(os.path.join(LM_TASKS, "hellaswag/utils.py"), os.path.join(work, "utils.py"))


def make_mmlu(data, work):
    tmpl = yaml.safe_load(open(os.path.join(LM_TASKS, "mmlu/default/_default_template_yaml")))
    z = zipfile.ZipFile(f"{data}/mmlu/mmlu.zip")
    subjects = sorted(n[len("data/test/"):-len("_test.csv")] for n in z.namelist()
                      if n.startswith("data/test/") and n.endswith("_test.csv"))
    os.makedirs(os.path.join(work, "mmlu"), exist_ok=True)
    names = []
    cats = {}  # lm-eval's category of each subject: the "tag" of its own mmlu_<subject>.yaml
    for s in subjects:
        files = {}
        for split in ("test", "dev"):
            rows = list(csv.reader(io.TextIOWrapper(z.open(f"data/{split}/{s}_{split}.csv"), encoding="utf-8")))
            p = os.path.join(work, "mmlu", f"{s}_{split}.jsonl")
            write_jsonl(p, [{"question": r[0], "subject": s, "choices": r[1:5], "answer": "ABCD".index(r[5])}
                            for r in rows])
            files[split] = p
        cfg = dict(tmpl)
        cfg.update(task=f"ps_mmlu_{s}", dataset_path="json", dataset_kwargs={"data_files": files},
                   description=f"The following are multiple choice questions (with answers) about {s.replace('_', ' ')}.\n\n")
        open(os.path.join(work, "mmlu", f"ps_mmlu_{s}.yaml"), "w").write(yaml.safe_dump(cfg, sort_keys=False))
        names.append(f"ps_mmlu_{s}")
        tag = yaml.safe_load(open(os.path.join(LM_TASKS, f"mmlu/default/mmlu_{s}.yaml")))["tag"]
        cats.setdefault(tag[len("mmlu_"):-len("_tasks")], []).append(f"ps_mmlu_{s}")
    # two levels, as lm_eval/tasks/mmlu/default/_mmlu.yaml: mmlu -> its 4 categories -> subjects
    agg = [{"metric": "acc", "weight_by_size": True}]
    for c, tasks in cats.items():
        group = {"group": f"ps_mmlucat_{c}", "task": tasks, "aggregate_metric_list": agg,
                 "metadata": {"version": 2}}
        open(os.path.join(work, "mmlu", f"ps_mmlucat_{c}.yaml"), "w").write(yaml.safe_dump(group, sort_keys=False))
    group = {"group": "ps_mmlu", "task": [f"ps_mmlucat_{c}" for c in cats], "aggregate_metric_list": agg,
             "metadata": {"version": 2}}
    open(os.path.join(work, "mmlu", "ps_mmlu.yaml"), "w").write(yaml.safe_dump(group, sort_keys=False))


def compare_saved(a):
    """Our samples against lm-eval's saved per-document log-likelihoods."""
    import numpy as np
    ours = {}
    for p in a.ours.split(","):
        for r in read_jsonl(p):
            ours[(r["task"], r["group"], r["doc"])] = r
    lm = read_jsonl(a.lm_samples)
    tasks = {}
    for s in lm:
        o = ours[(s["task"], s["group"], s["doc"])]
        t = tasks.setdefault(s["task"], {"n": 0, "dmax": 0.0, "diff": 0, "acc": [0, 0], "acc_norm": [0, 0]})
        t["n"] += 1
        t["dmax"] = max([t["dmax"]] + [abs(x - y) for x, y in zip(s["ll"], o["ll"])])
        lm_ll, ln = np.array(s["ll"]), np.array(o["chars"], dtype=float)
        if s["task"] == "lambada":
            m = {"acc": (o["acc"], float(s["greedy"][0]))}
        else:
            m = {"acc": (o["acc"], float(np.argmax(lm_ll) == o["gold"])),
                 "acc_norm": (o["acc_norm"], float(np.argmax(lm_ll / ln) == o["gold"]))}
        for k, (x, y) in m.items():
            t[k][0] += x
            t[k][1] += y
            t["diff"] += x != y
    bad = []
    print(f"{'task':12s} {'n':>5s} {'max|dll|':>10s} {'acc ours/lm':>14s} {'acc_norm ours/lm':>18s} diff-docs")
    for name, t in tasks.items():
        n = t["n"]
        print(f"{name:12s} {n:5d} {t['dmax']:10.2e} {t['acc'][0] / n:.4f}/{t['acc'][1] / n:.4f} "
              f"{t['acc_norm'][0] / n:.4f}/{t['acc_norm'][1] / n:.4f} {t['diff']}")
        if t["dmax"] > 1e-4 or t["diff"]:
            bad.append(name)
    print("MATCH" if not bad else f"DIFFER: {bad}")
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="HF model folder (with --gguf: the GGUF's folder)")
    ap.add_argument("--tokenizer", help="the tokenizer folder for lm-eval (default: the model's); "
                    "e.g. postshare tokenize --export DIR of the same GGUF")
    ap.add_argument("--gguf", help="a GGUF file name inside --model: transformers loads it itself "
                    "(its own dequantization and tokenizer), as lm-eval's gguf_file= does")
    ap.add_argument("--ours", required=True, help="postshare eval --samples files, comma-separated")
    ap.add_argument("--tasks", required=True)
    ap.add_argument("--limit", type=int, required=True)
    ap.add_argument("--num-fewshot", type=int, default=0)
    ap.add_argument("--data", default="../shared/data/eval")
    ap.add_argument("--work", required=True)
    ap.add_argument("--tag", default="run")
    ap.add_argument("--ours-summary", help="postshare eval --out PREFIX.json: compare its metrics and "
                    "standard errors with lm-eval's")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="float32", help="lm-eval's model dtype (float64: a reference)")
    ap.add_argument("--lm-samples", help="compare with the lm_samples_TAG.jsonl of an earlier run "
                    "instead of running lm-eval (acc from its log-likelihoods, acc_norm with our "
                    "choice lengths)")
    a = ap.parse_args()
    if a.lm_samples:
        sys.exit(compare_saved(a))
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    torch.set_num_threads(a.threads)
    os.makedirs(a.work, exist_ok=True)
    tasks = a.tasks.split(",")
    for t in tasks:
        if t == "mmlu":
            make_mmlu(a.data, a.work)
        else:
            make_yaml(t, a.data, a.work)
    lm = HFLM(pretrained=a.model, dtype=a.dtype, device="cpu", batch_size=a.batch_size,
              gguf_file=a.gguf, tokenizer=a.tokenizer)
    timing = {"seconds": 0.0, "requests": 0}
    orig = lm.loglikelihood

    def timed(requests, *args, **kw):
        t0 = time.time()
        r = orig(requests, *args, **kw)
        timing["seconds"] += time.time() - t0
        timing["requests"] += len(requests)
        return r

    lm.loglikelihood = timed
    tm = TaskManager(include_path=a.work)
    ps_names = [f"ps_{t}" for t in tasks]
    res = simple_evaluate(model=lm, tasks=ps_names, limit=a.limit, num_fewshot=a.num_fewshot,
                          task_manager=tm, log_samples=True, bootstrap_iters=100000)
    ours = {}
    for p in a.ours.split(","):
        for r in read_jsonl(p):
            ours[(r["task"], r["group"], r["doc"])] = r
    report = {"tasks": {}, "lm_eval_seconds": timing["seconds"], "lm_eval_requests": timing["requests"],
              "lm_eval_version": lm_eval.__version__, "torch_threads": torch.get_num_threads(),
              "dtype": a.dtype}
    lm_samples = open(os.path.join(a.work, f"lm_samples_{a.tag}.jsonl"), "w")
    print(f"{'task':12s} {'n':>5s} {'max|dll|':>10s} {'max rel':>9s} {'max/token':>10s} "
          f"{'acc ours/lm':>14s} {'acc_norm ours/lm':>18s} diff-docs")
    for t in tasks:
        keys = [k for k in res["samples"] if k == f"ps_{t}" or (t == "mmlu" and k.startswith("ps_mmlu_"))]
        n = 0
        dmax = rmax = tmax = 0.0
        acc_diff = 0
        sums = {"acc": [0, 0], "acc_norm": [0, 0]}
        for k in keys:
            group = t if t != "mmlu" else k[len("ps_mmlu_"):]
            for s in res["samples"][k]:
                o = ours.get((t, group, s["doc_id"]))
                if o is None:
                    print(f"missing in ours: {t} {group} {s['doc_id']}")
                    sys.exit(1)
                lls = [float(r[0]) for r in s["filtered_resps"]]
                greedy = [int(bool(r[1])) for r in s["filtered_resps"]]
                n += 1
                lm_samples.write(json.dumps({"task": t, "group": group, "doc": s["doc_id"], "ll": lls,
                                             "greedy": greedy}) + "\n")
                for x, y, k in zip(lls, o["ll"], o.get("tokens", [1] * len(lls))):
                    dmax = max(dmax, abs(x - y))
                    rmax = max(rmax, abs(x - y) / max(abs(y), 1e-30))
                    tmax = max(tmax, abs(x - y) / max(k, 1))
                for m in ("acc", "acc_norm"):
                    if m in s:
                        sums[m][0] += o[m]
                        sums[m][1] += s[m]
                        acc_diff += o[m] != s[m]
                if t == "lambada" and greedy != o["greedy"]:
                    acc_diff += 1
        name = f"ps_{t}"
        met = res["results"].get(name, {})
        report["tasks"][t] = {"n": n, "max_abs_dll": dmax, "max_rel_dll": rmax, "max_dll_per_token": tmax,
                              "docs_with_metric_diff": acc_diff,
                              "ours_acc": sums["acc"][0] / max(n, 1), "lm_acc": sums["acc"][1] / max(n, 1),
                              "ours_acc_norm": sums["acc_norm"][0] / max(n, 1),
                              "lm_acc_norm": sums["acc_norm"][1] / max(n, 1),
                              "lm_eval_results": {k: v for k, v in met.items() if isinstance(v, (int, float))}}
        r = report["tasks"][t]
        print(f"{t:12s} {n:5d} {dmax:10.2e} {rmax:9.1e} {tmax:10.1e} {r['ours_acc']:.4f}/{r['lm_acc']:.4f} "
              f"{r['ours_acc_norm']:.4f}/{r['lm_acc_norm']:.4f} {acc_diff}")
    if a.ours_summary:  # summary metrics and their standard errors, task by task
        summ = {r["task"]: r for r in json.load(open(a.ours_summary))["results"]}
        print(f"{'task':12s} {'metric':18s} {'postshare':>12s} {'lm-eval':>12s}")
        for t in tasks:
            met = res["results"].get(f"ps_{t}", {})
            for m in ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "perplexity", "perplexity_stderr"):
                lm_key = m.replace("_stderr", "_stderr,none") if m.endswith("_stderr") else f"{m},none"
                if m in summ.get(t, {}) and isinstance(met.get(lm_key), (int, float)):
                    x, y = summ[t][m], met[lm_key]
                    report["tasks"][t].setdefault("summary", {})[m] = [x, y]
                    print(f"{t:12s} {m:18s} {x:12.6g} {y:12.6g}")
            for c, v in summ.get(t, {}).get("categories", {}).items():  # mmlu's categories
                lm = res["results"].get(f"ps_mmlucat_{c}", {})
                if isinstance(lm.get("acc,none"), (int, float)):
                    print(f"{t + '_' + c:12s} {'acc / stderr':18s} {v['acc']:.4f}/{v['acc_stderr']:.5f} "
                          f"{lm['acc,none']:.4f}/{lm['acc_stderr,none']:.5f}")
    print(f"lm-eval loglikelihood time {timing['seconds']:.1f} s for {timing['requests']} requests")
    json.dump(report, open(os.path.join(a.work, f"lm_eval_{a.tag}.json"), "w"), indent=1, default=str)
    bad = [t for t, r in report["tasks"].items() if r["max_abs_dll"] > 1e-4 or r["docs_with_metric_diff"]]
    print("MATCH" if not bad else f"DIFFER: {bad}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
