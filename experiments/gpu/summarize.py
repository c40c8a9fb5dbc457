#!/usr/bin/env python3
"""summarize.py: the short table that experiments/gpu/check.sh prints last.

Reads OUT/env.txt, OUT/status.tsv (phase, result, seconds, note), OUT/tests.log,
OUT/sanitizer.log and OUT/bench.jsonl; prints markdown: the phases, the test and
sanitizer summaries, the benchmark table (tokens/s, MFU, peak memory, and
PostShare's speed over torch.compile), and a block to append to
experiments/gpu-results.md.
"""
import argparse
import json
import os
import re


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--gpu", default="")
    ap.add_argument("--total-s", type=int, default=0)
    ap.add_argument("--dry-run", action="store_true", help="check.sh ran no command (CHECK_DRY_RUN)")
    a = ap.parse_args()
    env = read(os.path.join(a.out, "env.txt"))
    date = (re.search(r"^date: (\S+)", env, re.M) or [None, "?"])[1]
    commit = (re.search(r"^commit: (\S+)", env, re.M) or [None, "?"])[1]
    lines = [f"## GPU check {date}: {a.gpu or '?'}, commit {commit}, {a.total_s} s", ""]
    if a.dry_run:
        lines += ["**Dry run (CHECK_DRY_RUN=1): no phase's command ran; this shows the order, "
                  "the budgets and the skip path only.**", ""]
    status = read(os.path.join(a.out, "status.tsv"))
    cut = [r.split("\t")[0] for r in status.splitlines()
           if "\tcut off\t" in r or "out of time" in r]
    if cut:
        lines += [f"Cut short: {', '.join(cut)} skipped for lack of time or stopped (the "
                  "budget, or the caller's time limit).", ""]

    lines += ["| phase | result | s | note |", "|---|---|---|---|"]
    for row in status.splitlines():
        f = (row.split("\t") + ["", "", "", ""])[:4]
        lines.append(f"| {f[0]} | {f[1]} | {f[2]} | {f[3]} |")
    lines.append("")

    tests = read(os.path.join(a.out, "tests.log"))
    # ctest --verbose prefixes each test's output with its number; each test ends
    # with "N passed, N failed, N skipped" (tests/test.h), so skips show too.
    counts = {m.group(1): m.group(2) for m in
              re.finditer(r"^(\d+): (\d+ passed, \d+ failed, \d+ skipped)", tests, re.M)}
    seen = {}
    for m in re.finditer(r"^\s*\d+/\d+ Test\s+#(\d+): (\S+) \.+\**\s*(\S+)", tests, re.M):
        seen[m.group(2)] = f"- {m.group(2)}: {m.group(3)} ({counts.get(m.group(1), '?')})"
    lines += seen.values()
    m = re.search(r"\d+% tests passed.*", tests)
    if m:
        lines.append(f"- ctest: {m.group(0)}")
    section = None  # each "== sanitizer TOOL EXE (" header, then its "ERROR SUMMARY"
    for line in read(os.path.join(a.out, "sanitizer.log")).splitlines():
        m = re.match(r"== (sanitizer [^(]+?) \(", line)
        if m:
            section = m.group(1)
            continue
        m = re.search(r"ERROR SUMMARY: (\d+) error", line)
        if m and section:
            lines.append(f"- {section}: {m.group(1)} errors")
            section = None
    lines.append("")

    rows = []
    for line in read(os.path.join(a.out, "bench.jsonl")).splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
    if rows:
        compiled = {r["preset"]: r["tokens_per_s"] for r in rows if r["impl"] == "torch-compile"}
        lines += ["| impl | preset | non-emb params | B x T (micro x accum) | tokens/s | MFU | "
                  "peak GiB | x torch.compile |", "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            ratio = ""
            if r["preset"] in compiled and compiled[r["preset"]] > 0:
                ratio = f"{r['tokens_per_s'] / compiled[r['preset']]:.2f}"
            mb = f" ({r['micro_batch']} x {r['grad_accum']})" if r.get("grad_accum", 1) > 1 else ""
            lines.append(f"| {r['impl']} | {r['preset']} | {r['params_nonembed'] / 1e6:.0f}M | "
                         f"{r['B']} x {r['T']}{mb} | {r['tokens_per_s']:.0f} | "
                         f"{100 * r['mfu']:.1f}% | {r['peak_mem_gib']:.1f} | {ratio} |")
        peak = rows[0].get("peak_tflops", 989)
        lines += ["", f"MFU: (6 N_nonembedding + 6 L T d_attn) x tokens/s over {peak:.0f} TFLOP/s "
                      "(dense bf16 peak). Targets: >= 50% MFU at 1b, >= 1.25x torch.compile."]
    else:
        lines.append("(no benchmark results)")
    lines += ["", "Commands: `bash experiments/gpu/fetch_deps.sh` (development machine), then "
                  "`bash experiments/gpu/check.sh` on the GPU machine with .gpudeps carried."]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
