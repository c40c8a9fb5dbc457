"""smollm2_table.py ROWS.jsonl OUT_DIR CONFIG TF: the smollm2 job's results table
(OUT_DIR/results.md, OUT_DIR/results.json) and plots (gnuplot): OUT_DIR/results.png
(perplexity and mean task accuracy against the ratio) from the rows
scripts/smollm2_job.sh evaluated, and OUT_DIR/curves.png (each PostShare run's pair
distance and LM loss by step, from OUT_DIR/runs/*/metrics.jsonl). Standard library
only."""
import glob
import json
import math
import os
import subprocess
import sys
import tempfile

rows_path, out, config, tf = sys.argv[1:5]
rows = [json.loads(line) for line in open(rows_path) if line.strip()]
if not rows:
    sys.exit(f"{rows_path}: no rows")
# the last evaluation of each (name, ratio) wins
by = {}
for r in rows:
    by[(r["name"], r["ratio"])] = r
rows = sorted(by.values(), key=lambda r: (r["ratio"], r["name"] != "directshare", r["name"]))
tasks = []
for r in rows:
    for t in r.get("tasks", {}).get("results", []):
        if t["task"] not in tasks:
            tasks.append(t["task"])


def task_cell(r, name):
    for t in r.get("tasks", {}).get("results", []):
        if t["task"] == name:
            return f"{t['acc']:.3f} ± {t['acc_stderr']:.3f}"
    return "-"


first = rows[0]
limit = first.get("tasks", {}).get("limit", 0)
lines = [
    f"SmolLM2-135M-Instruct: DirectShare, the training-free method `{tf}` and PostShare "
    f"(config `{config}`). WikiText-2 perplexity on the first {first['test_tokens']} tokens of "
    "valid.txt (never trained on; calibration uses its last 5%). Task accuracy (acc ± standard "
    f"error, zero-shot, {'the first ' + str(limit) + ' documents' if limit else 'all documents'} "
    "per task). bytes: fp32 weights stored, each shared slice once.",
    "",
    "| model | KV groups shared | params | bytes | WikiText-2 ppl |" + "".join(f" {t} |" for t in tasks),
    "|---|---|---|---|---|" + "---|" * len(tasks),
]
for r in rows:
    share = f"{r['ratio'] * 100:g}% ({r['replaced']} of {r['units']})" if r["ratio"] > 0 else "none"
    lines.append(
        f"| {r['name']} | {share} | {r['params']:,} | {r['bytes']:,} | {r['test_ppl']:.3f} |"
        + "".join(f" {task_cell(r, t)} |" for t in tasks)
    )
with open(os.path.join(out, "results.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
with open(os.path.join(out, "results.json"), "w") as f:
    json.dump({"config": config, "training_free": tf, "rows": rows}, f, indent=1)

# results.png: perplexity (log) and mean task accuracy against the ratio, one line per method
base = next((r for r in rows if r["ratio"] == 0), None)
methods = [m for m in dict.fromkeys(r["name"] for r in rows if r["ratio"] > 0)]


def mean_acc(r):
    accs = [t["acc"] for t in r.get("tasks", {}).get("results", [])]
    return sum(accs) / len(accs) if accs else float("nan")


with tempfile.NamedTemporaryFile("w", suffix=".dat", delete=False) as dat:
    for m in methods:
        dat.write(f'"{m}"\n')
        for r in rows:
            if r["name"] == m:
                dat.write(f"{r['ratio'] * 100:g} {r['test_ppl']} {mean_acc(r)}\n")
        dat.write("\n\n")
n = len(methods)
bppl = base["test_ppl"] if base else "NaN"
bacc = mean_acc(base) if base and tasks else "NaN"
gp = f"""set terminal png size {1200 if tasks else 650},500
set output "{os.path.join(out, 'results.png')}"
set multiplot layout 1,{2 if tasks else 1} title "SmolLM2-135M: sharing KV groups (unshared: black line)"
set xlabel "KV groups shared (%)"
set grid
set key top left
set ylabel "WikiText-2 perplexity (log scale)"
set logscale y
plot for [i=0:{n - 1}] "{dat.name}" index i using 1:2 with linespoints title columnheader(1), {bppl} with lines dt 2 lc rgb 'black' notitle
unset logscale y
set ylabel "mean task accuracy"
"""
if tasks:
    gp += f"""plot for [i=0:{n - 1}] "{dat.name}" index i using 1:3 with linespoints title columnheader(1), {bacc} with lines dt 2 lc rgb 'black' notitle
"""
gp += "unset multiplot\n"


def gnuplot(script, what):
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"smollm2_table: no {what} ({e})", file=sys.stderr)


gnuplot(gp, "results.png")
os.unlink(dat.name)

# curves.png: the PostShare runs' mean relative pair distance and LM loss by step
runs = sorted(glob.glob(os.path.join(out, "runs", "*", "metrics.jsonl")))
curves = {}
for m in runs:
    pts = [json.loads(line) for line in open(m) if line.strip()]
    pts = [p for p in pts if "dist_mean" in p]
    if pts:
        curves[os.path.basename(os.path.dirname(m))] = pts
if curves:
    with tempfile.NamedTemporaryFile("w", suffix=".dat", delete=False) as dat:
        for name, pts in curves.items():
            dat.write(f'"{name}"\n')
            for p in pts:
                dat.write(f"{p['step']} {p['dist_mean']} {p.get('lm_loss', float('nan'))}\n")
            dat.write("\n\n")
    k = len(curves)
    gnuplot(f"""set terminal png size 1200,500
set output "{os.path.join(out, 'curves.png')}"
set multiplot layout 1,2 title "PostShare runs: convergence of the planned pairs"
set xlabel "step"
set grid
set key top right
set ylabel "mean relative pair distance |a - b| / |b|"
plot for [i=0:{k - 1}] "{dat.name}" index i using 1:2 with lines title columnheader(1)
set ylabel "LM loss (train batch)"
plot for [i=0:{k - 1}] "{dat.name}" index i using 1:3 with lines title columnheader(1)
unset multiplot
""", "curves.png")
    os.unlink(dat.name)
    def run_info(name):
        """Tokens of post-training (the run's config.yaml) and the hand-off's
        data.val perplexity of the post-trained and the shared model (results.json)."""
        d = os.path.join(out, "runs", name)
        cfg, sec = {}, ""  # "section.key" -> value of the resolved two-level YAML
        try:
            for line in open(os.path.join(d, "config.yaml")):
                k, _, v = line.split("#")[0].partition(":")
                if not line[:1].isspace():
                    sec = k.strip()
                elif v.strip():
                    cfg[f"{sec}.{k.strip()}"] = v.strip()
            tokens = math.prod(int(cfg[k]) for k in ("train.steps", "data.batch_size",
                                                     "data.seq_len", "train.grad_accum"))
        except (OSError, KeyError, ValueError):
            tokens = None
        val, test = {}, {}
        try:
            for m in json.load(open(os.path.join(d, "results.json")))["models"]:
                val[m["name"]] = m["val_ppl"]
                test[m["name"]] = m.get("test_ppl", math.nan)
        except (OSError, KeyError, ValueError):
            pass
        return (tokens, val.get("posttrained", math.nan), val.get("postshare", math.nan),
                test.get("posttrained", math.nan))

    summary = {}
    for n, p in curves.items():
        tokens, vpost, vshared, tpost = run_info(n)
        summary[n] = {"steps": p[-1]["step"], "tokens": tokens, "dist_first": p[0]["dist_mean"],
                      "dist_last": p[-1]["dist_mean"], "cos_last": p[-1]["cos_mean"],
                      "lm_first": next((q["lm_loss"] for q in p if "lm_loss" in q), math.nan),
                      "lm_last": p[-1].get("lm_loss", math.nan),
                      "val_ppl_posttrained": vpost, "val_ppl_shared": vshared,
                      "test_ppl_posttrained": tpost}
    with open(os.path.join(out, "curves.json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(out, "results.md"), "a") as f:
        f.write("\nPostShare runs (curves.png): tokens of post-training, mean relative pair distance "
                "and LM loss (train batch) at the first and last logged step, the run's own "
                "validation perplexity (data.val) of the post-trained model before and after "
                "the hand-off's sharing, and the WikiText-2 test perplexity of the post-trained "
                "model before sharing (unshared; the shared one is the table's row).\n\n")
        f.write("| run | steps | tokens | pair distance | cosine (last) | LM loss | val ppl post-trained -> shared | test ppl post-trained, unshared |\n"
                "|---|---|---|---|---|---|---|---|\n")
        for n, c in summary.items():
            tok = f"{c['tokens']:,}" if c["tokens"] else "-"
            f.write(f"| {n} | {c['steps']} | {tok} | {c['dist_first']:.3f} -> {c['dist_last']:.3f} | "
                    f"{c['cos_last']:.3f} | {c['lm_first']:.3f} -> {c['lm_last']:.3f} | "
                    f"{c['val_ppl_posttrained']:.2f} -> {c['val_ppl_shared']:.2f} | "
                    f"{c['test_ppl_posttrained']:.3f} |\n")
print(f"wrote {out}/results.md, results.json, results.png" + (", curves.png" if curves else ""))
