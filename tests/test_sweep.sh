#!/usr/bin/env bash
# test_sweep.sh: `postshare sweep` through the command line.
#   - a 2x2 sweep (share.reg.weight x share.ratio) of configs/tiny.yaml:
#     --dry-run lists 4 points and changes nothing; --print-commands writes the
#     points' job.yaml and prints one absolute `postshare train` command each,
#     training nothing;
#   - the sweep is stopped (SIGTERM to its process group) once point 1 has
#     finished and point 2 has a checkpoint; started again it skips point 1
#     (whose files stay untouched), resumes point 2 and trains 3 and 4; then
#     sweep.csv has 4 rows and both plots are drawn;
#   - --jobs 2 with failing points: each failure is reported with its exit
#     status and log, the others still finish, the exit status is 1;
#   - --report on hand-made results.json: the exact sweep.csv (with task columns
#     and a task plot when the rows have eval.tasks results); a malformed
#     results.json stops the report and leaves sweep.csv as it was; without
#     gnuplot the .dat/.gp files are still written;
#   - bad sweep sections (unknown key, bad value, non-list, empty list,
#     duplicate key) fail naming the file, line, key and value, writing
#     nothing; `postshare train` refuses a sweep config.
# Usage: test_sweep.sh POSTSHARE_BIN SOURCE_DIR
set -uo pipefail
PS="$1"; SRC="$2"
source "$SRC/tests/shlib.sh"
# One thread: tiny models gain nothing from more, and ctest -j2 runs tests side by side.
export OMP_NUM_THREADS=1

cat "$SRC"/trainer/*.c > "$TMP/text.txt"
"$PS" prepare --tokenizer byte --out "$TMP/data" --prefix t --val-fraction 0.1 "$TMP/text.txt" \
  > /dev/null || bad "prepare failed"

# sweep_config FILE SWEEP_SECTION_LINES: configs/tiny.yaml plus a sweep section
sweep_config() {
  { cat "$SRC/configs/tiny.yaml"; printf '\nsweep:\n%s\n' "$2"; } > "$1"
}
sweep_config "$TMP/sweep.yaml" '  share.reg.weight: [0, 0.5]
  share.ratio: [0.25, 0.5]'
DATA=(--set run.out_dir="$TMP/runs" --set data.train="$TMP/data/t_train_*.bin"
      --set data.val="$TMP/data/t_val_*.bin")
# ~2 s per point: long enough to stop point 2 halfway, checkpoints every 100 steps
LONG=(--set run.name=sw --set train.steps=800 --set train.log_every=100 --set train.eval_every=0
      --set checkpoint.every=100)
sweep() { "$PS" sweep "$TMP/sweep.yaml" "${DATA[@]}" "${LONG[@]}" "$@"; }
SW="$TMP/runs/sw"
P=(p01_share.reg.weight=0_share.ratio=0.25 p02_share.reg.weight=0_share.ratio=0.5
   p03_share.reg.weight=0.5_share.ratio=0.25 p04_share.reg.weight=0.5_share.ratio=0.5)
# every file of a directory with its checksum and modification time
snapshot() { (cd "$1" && find . -type f -printf '%p %T@\n' | sort && find . -type f | sort | xargs md5sum); }

# ---------------------------------------------------------------------------
# --dry-run and --print-commands
sweep --dry-run > "$TMP/dry.log" 2>&1 || bad "--dry-run failed: $(cat "$TMP/dry.log")"
check '[ "$(grep -c "not started" "$TMP/dry.log")" = 4 ] && grep -q "4/4  ${P[3]} *0.5 *0.5 *not started$" "$TMP/dry.log"' \
  "--dry-run does not list the 4 points: $(cat "$TMP/dry.log")"
check '[ ! -e "$SW" ]' "--dry-run created $SW"

sweep --print-commands > "$TMP/cmds.txt" 2> "$TMP/cmds.err" || bad "--print-commands failed: $(cat "$TMP/cmds.err")"
check '[ "$(wc -l < "$TMP/cmds.txt")" = 4 ]' "--print-commands printed $(wc -l < "$TMP/cmds.txt") lines, not 4"
expected_cmds=$(for p in "${P[@]}"; do echo "$(readlink -f "$PS") train $SW/$p/job.yaml"; done)
check '[ "$(cat "$TMP/cmds.txt")" = "$expected_cmds" ]' \
  "--print-commands printed: $(cat "$TMP/cmds.txt")"
check 'grep -q "name: \"${P[1]}\"" "$SW/${P[1]}/job.yaml" && grep -q "out_dir: \"$SW\"" "$SW/${P[1]}/job.yaml" && grep -q "ratio: 0.5 " "$SW/${P[1]}/job.yaml" && ! grep -q "^sweep:" "$SW/${P[1]}/job.yaml"' \
  "point 2's job.yaml is not its resolved job: $(cat "$SW/${P[1]}/job.yaml")"
check '[ -z "$(find "$SW" -name "*.h5" -o -name metrics.jsonl)" ]' "--print-commands trained something"

# ---------------------------------------------------------------------------
# Stop the sweep while point 2 trains, then start it again
set -m  # job control: the background sweep gets its own process group (pgid = its pid)
"$PS" sweep "$TMP/sweep.yaml" "${DATA[@]}" "${LONG[@]}" > "$TMP/run1.log" 2>&1 &  # no subshell
spid=$!
set +m
for _ in $(seq 1200); do  # at most 60 s
  [ -f "$SW/${P[0]}/results.json" ] && compgen -G "$SW/${P[1]}/ckpt-*.h5" > /dev/null && break
  sleep 0.05
done
kill -TERM -- -"$spid"
wait "$spid"
rc=$?
check '[ $rc -eq 3 ]' "the stopped sweep exited $rc, not 3: $(tail -5 "$TMP/run1.log")"
check 'grep -q "no new point starts" "$TMP/run1.log" && grep -q "\[point 2/4\] ${P[1]}: stopped after" "$TMP/run1.log"' \
  "the stopped sweep did not say so: $(tail -5 "$TMP/run1.log")"
check '[ -f "$SW/${P[0]}/results.json" ] && [ ! -f "$SW/${P[1]}/results.json" ] && [ ! -e "$SW/${P[2]}/metrics.jsonl" ]' \
  "after the stop, point 1 must be finished, point 2 not, point 3 not started"
sweep --dry-run > "$TMP/dry2.log" 2>&1
check 'grep -q "1/4 .*finished$" "$TMP/dry2.log" && grep -q "2/4 .*not finished: resumes at step [1-9]" "$TMP/dry2.log" && grep -q "3/4 .*not started" "$TMP/dry2.log"' \
  "--dry-run after the stop: $(cat "$TMP/dry2.log")"
before=$(snapshot "$SW/${P[0]}")

sweep > "$TMP/run2.log" 2>&1
rc=$?
check '[ $rc -eq 0 ]' "the restarted sweep exited $rc: $(tail -5 "$TMP/run2.log")"
check 'grep -q "\[point 1/4\] ${P[0]}: finished earlier (results.json): skipped" "$TMP/run2.log"' \
  "the restarted sweep does not say it skipped point 1"
check '! grep -q "^\[point 1/4\] postshare train:" "$TMP/run2.log"' "the restarted sweep trained point 1 again"
check '[ "$(snapshot "$SW/${P[0]}")" = "$before" ]' "the finished point 1's files changed"
check 'grep -q "\[point 2/4\] ${P[1]}: resuming at step" "$TMP/run2.log" && grep -q "\[point 2/4\] resume: continuing at step" "$TMP/run2.log"' \
  "point 2 did not resume from its checkpoint"
check 'grep -q "\[point 3/4\] ${P[2]}: finished in" "$TMP/run2.log" && grep -q "\[point 4/4\] ${P[3]}: finished in" "$TMP/run2.log"' \
  "points 3 and 4 did not finish"
check '[ "$(grep -c "^==== postshare sweep" "$SW/${P[1]}/train.log")" = 2 ] && grep -q "resume: continuing" "$SW/${P[1]}/train.log"' \
  "point 2's train.log does not hold both runs"
check '[ "$(wc -l < "$SW/sweep.csv")" = 5 ] && [ "$(cut -d, -f1,4 "$SW/sweep.csv" | tail -4 | tr "\n" " ")" = "${P[0]},finished ${P[1]},finished ${P[2]},finished ${P[3]},finished " ]' \
  "sweep.csv does not have the 4 finished points: $(cat "$SW/sweep.csv")"
check 'head -1 "$SW/sweep.csv" | grep -q "^point,share.reg.weight,share.ratio,status,.*postshare_val_ppl,postshare_params,postshare_bytes"' \
  "sweep.csv header: $(head -1 "$SW/sweep.csv")"
for png in ppl_vs_reg_weight loss_curves; do
  check '[ "$(head -c 4 "$SW/$png.png" | od -An -c | tr -d " ")" = "211PNG" ]' "no $png.png: $(cat "$SW/$png.gp.log" 2>&1)"
done

# ---------------------------------------------------------------------------
# --jobs 2; a point that fails (its val data is missing) is reported, the others go on
sweep_config "$TMP/fail.yaml" "  data.val: ['$TMP/data/t_val_*.bin', '$TMP/missing/*.bin']
  train.lr: [0.001, 0.002]"
"$PS" sweep "$TMP/fail.yaml" --set run.out_dir="$TMP/runs" --set data.train="$TMP/data/t_train_*.bin" \
  --set run.name=fail --set train.steps=20 --jobs 2 > "$TMP/fail.log" 2>&1
rc=$?
check '[ $rc -eq 1 ]' "a sweep with failed points exited $rc, not 1"
check '[ "$(grep -c "FAILED (exit status 1) after .*; see $TMP/runs/fail/p0[34]_.*/train.log" "$TMP/fail.log")" = 2 ]' \
  "the failed points are not reported with status and log: $(cat "$TMP/fail.log")"
check 'grep -q "4 points: 2 trained now, 0 finished earlier, 2 FAILED" "$TMP/fail.log" && ls "$TMP"/runs/fail/p0[12]_*/results.json > /dev/null' \
  "the points that work did not finish beside the failing ones"
check 'cat "$TMP"/runs/fail/p03_*/train.log | grep -q "no files match"' "a failed point's train.log lacks the error"

# ---------------------------------------------------------------------------
# --report on hand-made results: the exact csv
sweep_config "$TMP/rep.yaml" '  share.reg.weight: [0, 1]
  share.ratio: [0.1, 0.3]'
rep() { "$PS" sweep "$TMP/rep.yaml" "${DATA[@]}" --set run.name=rep "$@"; }
rep --print-commands > /dev/null 2>&1 || bad "rep: --print-commands failed"
R="$TMP/runs/rep"
results() {  # results WEIGHT RATIO PPL_POSTSHARE
  printf '{"models": [{"name": "start", "params": 1000, "bytes": 4000, "val_loss": 2.5, "val_ppl": 12.182494},
    {"name": "directshare", "params": 900, "bytes": 3600, "val_loss": 3.0, "val_ppl": 20.085537},
    {"name": "posttrained", "params": 1000, "bytes": 4000, "val_loss": 2.0, "val_ppl": 7.389056},
    {"name": "postshare", "params": 900, "bytes": 3600, "val_loss": 2.1, "val_ppl": %s}],
  "share": {"ratio": %s, "match": "qk", "reg_type": "l2", "reg_weight": %s, "lm_weight": 1, "targets": "q,k,v", "pairs": 1},
  "final": {"lm_loss": 2.25, "reg_loss": 0.125, "cos_mean": 0.9, "dist_mean": 0.5}}\n' "$3" "$2" "$1"
}
results 0 0.1 8.166170 > "$R/p01_share.reg.weight=0_share.ratio=0.1/results.json"
results 1 0.1 7.5 > "$R/p03_share.reg.weight=1_share.ratio=0.1/results.json"
printf '{"step":0,"val_loss":5.5}\n{"step":1,"loss":3,"lm_loss":5.5,"reg_loss":1.5}\n{"step":2,"loss":2,"lm_loss":4,"reg_loss":0.5}\n{"step":3,"lo' \
  > "$R/p01_share.reg.weight=0_share.ratio=0.1/metrics.jsonl"
rep --report > "$TMP/rep.log" 2>&1 || bad "--report failed: $(cat "$TMP/rep.log")"
cat > "$TMP/expected.csv" <<'EOF'
point,share.reg.weight,share.ratio,status,start_val_loss,start_val_ppl,start_params,start_bytes,directshare_val_loss,directshare_val_ppl,directshare_params,directshare_bytes,posttrained_val_loss,posttrained_val_ppl,posttrained_params,posttrained_bytes,postshare_val_loss,postshare_val_ppl,postshare_params,postshare_bytes,final_lm_loss,final_reg_loss,final_cos_mean,final_dist_mean
p01_share.reg.weight=0_share.ratio=0.1,0,0.1,finished,2.500000,12.1825,1000,4000,3.000000,20.0855,900,3600,2.000000,7.3891,1000,4000,2.100000,8.1662,900,3600,2.25,0.125,0.9,0.5
p02_share.reg.weight=0_share.ratio=0.3,0,0.3,not finished,,,,,,,,,,,,,,,,,,,,
p03_share.reg.weight=1_share.ratio=0.1,1,0.1,finished,2.500000,12.1825,1000,4000,3.000000,20.0855,900,3600,2.000000,7.3891,1000,4000,2.100000,7.5000,900,3600,2.25,0.125,0.9,0.5
p04_share.reg.weight=1_share.ratio=0.3,1,0.3,not finished,,,,,,,,,,,,,,,,,,,,
EOF
diff "$TMP/expected.csv" "$R/sweep.csv" > "$TMP/csv.diff"
rc=$?
check '[ $rc -eq 0 ]' "--report sweep.csv differs: $(cat "$TMP/csv.diff")"
check 'grep -q "^0 8.16617 20.085537 7.389056 12.182494$" "$R/ppl_vs_reg_weight.dat" && grep -q "^1 7.5 20.085537" "$R/ppl_vs_reg_weight.dat"' \
  "ppl_vs_reg_weight.dat: $(cat "$R/ppl_vs_reg_weight.dat")"
check 'grep -q "^2 4 0.5$" "$R/loss_curves.dat" && [ "$(grep -c "^[0-9]" "$R/loss_curves.dat")" = 2 ]' \
  "loss_curves.dat (lm_loss, reg_loss by step; the cut last line left out): $(cat "$R/loss_curves.dat")"
check '[ -s "$R/ppl_vs_reg_weight.png" ] && [ -s "$R/loss_curves.png" ]' "--report drew no plots: $(cat "$TMP/rep.log")"
# without gnuplot: the data and scripts, and a message that says why there is no png
rm "$R"/*.png "$R"/*.dat
PATH=/nonexistent rep --report > "$TMP/nognuplot.log" 2>&1 || bad "--report without gnuplot failed"
check 'grep -q "gnuplot is not installed" "$TMP/nognuplot.log" && [ -s "$R/loss_curves.dat" ] && [ -s "$R/loss_curves.gp" ] && [ ! -e "$R/loss_curves.png" ]' \
  "--report without gnuplot: $(cat "$TMP/nognuplot.log")"
# a malformed results.json stops the report before it writes anything
echo '{"models": [{"name": "start", "params": 1}]}' > "$R/p02_share.reg.weight=0_share.ratio=0.3/results.json"
csv_before=$(md5sum < "$R/sweep.csv")
rep --report > "$TMP/badres.log" 2>&1
rc=$?
check '[ $rc -ne 0 ] && grep -q "p02_share.reg.weight=0_share.ratio=0.3/results.json: models\[0\] (start): \"val_loss\" must be a number" "$TMP/badres.log"' \
  "a malformed results.json: rc $rc, $(cat "$TMP/badres.log")"
check '[ "$(md5sum < "$R/sweep.csv")" = "$csv_before" ]' "a failed report changed sweep.csv"
# task results (eval.tasks) in the rows: MODEL_TASK_METRIC columns and a plot per task
sweep_config "$TMP/rept.yaml" '  share.reg.weight: [0, 1]'
rept() { "$PS" sweep "$TMP/rept.yaml" "${DATA[@]}" --set run.name=rept "$@"; }
rept --print-commands > /dev/null 2>&1 || bad "rept: --print-commands failed"
RT="$TMP/runs/rept"
tresults() {  # tresults WEIGHT PIQA_ACC_NORM
  printf '{"models": [{"name": "directshare", "params": 900, "bytes": 3600, "val_loss": 3.0, "val_ppl": 20.0,
      "tasks": [{"task": "piqa", "n": 10, "num_fewshot": 0, "acc": 0.5, "acc_stderr": 0.1, "acc_norm": 0.4, "acc_norm_stderr": 0.1}]},
    {"name": "postshare", "params": 900, "bytes": 3600, "val_loss": 2.1, "val_ppl": 8,
      "tasks": [{"task": "piqa", "n": 10, "num_fewshot": 0, "acc": 0.6, "acc_stderr": 0.1, "acc_norm": %s, "acc_norm_stderr": 0.1},
                {"task": "lambada", "n": 10, "num_fewshot": 0, "acc": 0.25, "acc_stderr": 0.1, "perplexity": 40.5, "perplexity_stderr": 3}]}],
  "share": {"ratio": 0.3, "match": "qk", "reg_type": "l2", "reg_weight": %s, "lm_weight": 1, "targets": "q,k,v", "pairs": 1}}\n' "$2" "$1"
}
tresults 0 0.55 > "$RT/p01_share.reg.weight=0/results.json"
tresults 1 0.7 > "$RT/p02_share.reg.weight=1/results.json"
rept --report > "$TMP/rept.log" 2>&1 || bad "--report with task results failed: $(cat "$TMP/rept.log")"
check 'head -1 "$RT/sweep.csv" | grep -q ",postshare_bytes,directshare_piqa_acc,directshare_piqa_acc_norm,directshare_lambada_acc,directshare_lambada_perplexity,postshare_piqa_acc,postshare_piqa_acc_norm,postshare_lambada_acc,postshare_lambada_perplexity$"' \
  "sweep.csv task columns: $(head -1 "$RT/sweep.csv")"
check 'grep -q "^p02_share.reg.weight=1,1,finished,.*,0.5,0.4,,,0.6,0.7,0.25,40.5$" "$RT/sweep.csv"' "sweep.csv task values: $(cat "$RT/sweep.csv")"
check 'grep -q "^0 0.55 0.4 ? ?$" "$RT/piqa_acc_norm_vs_reg_weight.dat" && grep -q "^1 0.7 0.4" "$RT/piqa_acc_norm_vs_reg_weight.dat" && [ -s "$RT/lambada_acc_vs_reg_weight.dat" ]' \
  "task plot data: $(cat "$RT/piqa_acc_norm_vs_reg_weight.dat" 2>&1)"

# ---------------------------------------------------------------------------
# Bad sweep sections: a clear message (file:line, key, value), exit 1, nothing written
bad_section() {  # bad_section SECTION_LINES EXPECTED_TEXT...
  sweep_config "$TMP/bad.yaml" "$1"
  shift
  "$PS" sweep "$TMP/bad.yaml" "${DATA[@]}" --set run.name=bad > "$TMP/bad.log" 2>&1
  local rc=$? n
  check '[ $rc -eq 1 ]' "bad section: exit status $rc, not 1"
  for n in "$@"; do
    check 'grep -qF -- "$n" "$TMP/bad.log"' "bad section: the message lacks '$n': $(cat "$TMP/bad.log")"
  done
  check '[ ! -e "$TMP/runs/bad" ]' "a bad sweep section created the sweep directory"
}
L=$(($(wc -l < "$SRC/configs/tiny.yaml") + 3))  # the line of the section's first key
bad_section '  share.ration: [0.1, 0.2]' "bad.yaml:$L: sweep: share.ration: value '0.1': unknown key 'share.ration' (did you mean 'share.ratio'?)"
bad_section '  share.ratio: [0.1, 1.5]' "bad.yaml:$L: sweep: share.ratio: value '1.5': share.ratio must be in [0,1)"
bad_section '  train.steps: [10, ten]' "bad.yaml:$L: sweep: train.steps: value 'ten': train.steps: expected an integer"
bad_section '  share.ratio: 0.3' "bad.yaml:$L: sweep: share.ratio: expected a list of values"
bad_section '  share.ratio: []' "bad.yaml:$L: sweep: share.ratio: the list of values is empty"
bad_section '  share.ratio: [0.1]
  share.ratio: [0.2]' "bad.yaml:$((L + 1)): sweep: duplicate key 'share.ratio' (first on line $L)"
bad_section '  run.name: [a, b]' "bad.yaml:$L: sweep: run.name cannot be swept"
bad_section '  share.ratio: [0.1, 0.10]' "sweep: share.ratio: the values '0.1' and '0.10' give the same job"

# `postshare train` refuses a sweep config
"$PS" train "$TMP/sweep.yaml" "${DATA[@]}" --set run.name=plain > "$TMP/train.log" 2>&1
rc=$?
check '[ $rc -ne 0 ] && grep -q "sweep.yaml:$((L - 1)): the config has a sweep section.*run .postshare sweep" "$TMP/train.log" && [ ! -e "$TMP/runs/plain" ]' \
  "train of a sweep config: rc $rc, $(cat "$TMP/train.log")"

summary
