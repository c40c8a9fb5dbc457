#!/usr/bin/env bash
# test_share_cli.sh: DirectShare through the command line on small random HF
# models (MHA and GQA, made with `postshare train` for one step):
#   match writes the plan, its summary and heat map (PNG when gnuplot is there;
#   without gnuplot it says so and writes the data); an independent Python
#   re-implementation (tests/check_share_plan.py, standard library only) agrees
#   with the plan for every match function; share writes a compact model and
#   --materialize an HF folder; eval gives both the same loss; run.sh's
#   DirectShare step (scripts/directshare.sh) prints the comparison; bad plans are
#   rejected with a message naming the plan and the problem, without touching
#   an earlier output.
# Usage: test_share_cli.sh POSTSHARE_BIN SOURCE_DIR
set -uo pipefail
PS="$1"; SRC="$2"
. "$SRC/tests/shlib.sh"  # TMP, PY, ok/bad/check, expect_fail

# data and three random models: MHA (two seeds) and GQA, 6 layers of 4 heads
cat "$SRC"/trainer/*.c > "$TMP/text.txt"
"$PS" prepare --tokenizer byte --out "$TMP/data" --prefix t "$TMP/text.txt" >/dev/null
model() {  # name seed n_kv_heads
  "$PS" train "$SRC/configs/tiny.yaml" --set run.out_dir="$TMP/runs" --set run.name="$1" \
    --set run.seed="$2" --set model.n_layers=6 --set model.n_kv_heads="$3" \
    --set model.init_std=0.3 --set data.train="$TMP/data/t_train_*.bin" \
    --set data.val="$TMP/data/t_val_*.bin" --set train.steps=1 >/dev/null 2>&1 \
    || bad "train $1"
}
model mha 1 4; model mha2 2 4; model gqa 3 2
MHA="$TMP/runs/mha/model"; GQA="$TMP/runs/gqa/model"

# match: plan, summary, heat map; the Python re-implementation agrees
"$PS" match "$MHA" --ratio 0.3 -o "$TMP/p/plan.json" > "$TMP/match.log" 2>&1 || bad "match: $(cat "$TMP/match.log")"
check '[ -f "$TMP/p/plan.json" ] && [ -f "$TMP/p/plan.summary.txt" ] && [ -f "$TMP/p/plan.heatmap.dat" ] && [ -f "$TMP/p/plan.chosen.dat" ]' "match output files"
check 'grep -q "7 of 24 units replaced" "$TMP/p/plan.summary.txt" && grep -q "similarity threshold" "$TMP/p/plan.summary.txt" && grep -q "layer distance" "$TMP/p/plan.summary.txt"' "summary content"
if command -v gnuplot >/dev/null; then
  check '[ "$(head -c 4 "$TMP/p/plan.png" | od -An -c | tr -d " ")" = "211PNG" ]' "plan.png is a PNG"
fi
# without gnuplot: a clear note, the data, no PNG
PATH=/nonexistent "$PS" match "$MHA" --ratio 0.3 -o "$TMP/q/plan.json" > "$TMP/nognu.log" 2>&1
check 'grep -q "gnuplot is not installed" "$TMP/nognu.log" && [ -f "$TMP/q/plan.heatmap.dat" ] && [ ! -f "$TMP/q/plan.png" ]' "no-gnuplot note"
pycheck() {  # MODEL PLAN WHAT
  if "$PY" "$SRC/tests/check_share_plan.py" "$1" "$2" > "$TMP/py.log" 2>&1; then ok
  else bad "python re-implementation disagrees ($3): $(cat "$TMP/py.log")"; fi
}
for m in qk q k v qkv; do
  for r in 0.2 0.5; do
    "$PS" match "$MHA" --match $m --ratio $r --no-plot -o "$TMP/m/$m$r.json" >/dev/null 2>&1
    pycheck "$MHA" "$TMP/m/$m$r.json" "MHA, $m, ratio $r"
  done
done
"$PS" match "$GQA" --ratio 0.4 --no-plot -o "$TMP/m/gqa.json" >/dev/null 2>&1
pycheck "$GQA" "$TMP/m/gqa.json" "GQA, qk, ratio 0.4"

# share: compact and materialized; eval gives the same loss
"$PS" share "$MHA" --plan "$TMP/p/plan.json" -o "$TMP/compact" > "$TMP/share.log" 2>&1 || bad "share: $(cat "$TMP/share.log")"
"$PS" share "$MHA" --plan "$TMP/p/plan.json" -o "$TMP/mat" --materialize > /dev/null 2>&1 || bad "share --materialize"
check 'grep -q postshare_shared "$TMP/compact/config.json" && [ -f "$TMP/compact/plan.json" ] && ! grep -q postshare_shared "$TMP/mat/config.json"' "compact/materialized folders"
# each replaced head saves its Wq, Wk, Wv rows and Wo columns: 4 x hd x C = 4 x 8 x 32
n_rep=$(grep -o '"replaced":[^,]*' "$TMP/p/plan.json" | grep -o '[0-9]*')
orig=$(awk '/^original /{print $2}' "$TMP/share.log"); comp=$(awk '/^compact /{print $2}' "$TMP/share.log")
check '[ -n "$orig" ] && [ "$comp" -eq $((orig - n_rep * 4 * 8 * 32)) ]' "share report: $orig -> $comp parameters for $n_rep heads"
st=$(stat -c %s "$TMP/compact/model.safetensors")
check 'grep -Eq "^compact +[0-9]+ +[0-9]+ +$st " "$TMP/share.log"' "reported compact size is not the file's ($st)"
EV=(--data "$TMP/data/t_val_*.bin" --seq-len 32 --batch-size 4 --batches 2)
lc=$("$PS" eval "$TMP/compact" "${EV[@]}" 2>&1 | grep -o 'val loss [0-9.]*')
lm=$("$PS" eval "$TMP/mat" "${EV[@]}" 2>&1 | grep -o 'val loss [0-9.]*')
lo=$("$PS" eval "$MHA" "${EV[@]}" 2>&1 | grep -o 'val loss [0-9.]*')
check '[ -n "$lc" ] && [ "$lc" = "$lm" ] && [ "$lc" != "$lo" ]' "eval: compact '$lc', materialized '$lm', original '$lo'"
expect_fail "hf: on a compact folder" "compact/config.json.*compact shared model" "$PS" eval "hf:$TMP/compact" "${EV[@]}"

# run.sh's DirectShare step: match, share, evaluate both, print the comparison
PS="$PS" bash "$SRC/scripts/directshare.sh" "$MHA" "$TMP/data/t_val_*.bin" 0.3 "$TMP/ds" \
  --seq-len 32 --batch-size 4 --batches 2 > "$TMP/ds.log" 2>&1
check '[ $? -eq 0 ] && grep -Eq "^original +[0-9]+ .* ${lo#val loss } " "$TMP/ds.log" && grep -Eq "^compact 0.3 +[0-9]+ .* ${lc#val loss } " "$TMP/ds.log" && [ -f "$TMP/ds/compact/plan.json" ]' \
  "scripts/directshare.sh: $(cat "$TMP/ds.log")"

# match on an HF folder reads the attention tensors in place: a bf16 copy gives
# the same plan as the whole model loaded in fp32 (--no-map)
"$PS" share "$MHA" --plan "$TMP/m/qk0.2.json" --materialize --dtype bfloat16 -o "$TMP/bf" >/dev/null 2>&1 || bad "bf16 copy"
"$PS" match "$TMP/bf" --ratio 0.3 --no-plot -o "$TMP/bf1.json" > "$TMP/bf1.log" 2>&1
"$PS" match "$TMP/bf" --ratio 0.3 --no-plot --no-map -o "$TMP/bf2.json" > "$TMP/bf2.log" 2>&1
check 'grep -q "in place (BF16" "$TMP/bf1.log" && ! grep -q "in place" "$TMP/bf2.log"' "bf16 match in place: $(cat "$TMP/bf1.log")"
"$PY" - "$TMP/bf1.json" "$TMP/bf2.json" > "$TMP/cmp.log" 2>&1 <<'EOF'
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:3])
assert a["fingerprint"] == b["fingerprint"], (a["fingerprint"], b["fingerprint"])
key = lambda e: (e["layer"], e["head"], e["source_layer"], e["source_head"])
assert [key(e) for e in a["shared"]] == [key(e) for e in b["shared"]]
assert all(abs(x["similarity"] - y["similarity"]) < 1e-6 for x, y in zip(a["shared"], b["shared"]))
EOF
check '[ $? -eq 0 ]' "bf16 in place vs loaded: $(cat "$TMP/cmp.log")"

# calibrate; match by calibration, circuit, random, prune; share by align + merge and prune
"$PS" calibrate "$GQA" --data "$TMP/data/t_val_*.bin" --tokens 256 --seq-len 32 -o "$TMP/cal.bin" > "$TMP/cal.log" 2>&1 || bad "calibrate: $(cat "$TMP/cal.log")"
for m in calib circuit; do
  "$PS" match "$GQA" --match $m --calib "$TMP/cal.bin" --ratio 0.4 -o "$TMP/c/$m.json" > "$TMP/c.log" 2>&1 || bad "match $m: $(cat "$TMP/c.log")"
done
"$PS" match "$GQA" --select random --seed 5 --ratio 0.4 --no-plot -o "$TMP/c/r1.json" >/dev/null 2>&1
"$PS" match "$GQA" --select random --seed 5 --ratio 0.4 --no-plot -o "$TMP/c/r2.json" >/dev/null 2>&1
check 'cmp -s "$TMP/c/r1.json" "$TMP/c/r2.json" && grep -q "selection random" "$TMP/c/r1.summary.txt"' "random plan with one seed twice"
"$PS" match "$GQA" --select prune --calib "$TMP/cal.bin" --ratio 0.4 --no-plot -o "$TMP/c/pr.json" >/dev/null 2>&1 || bad "match --select prune"
"$PS" share "$GQA" --plan "$TMP/c/calib.json" --align --combine merge --calib "$TMP/cal.bin" -o "$TMP/c/merged" > "$TMP/c/merge.log" 2>&1 || bad "share --align --combine merge: $(cat "$TMP/c/merge.log")"
check 'grep -q "aligned .* targets" "$TMP/c/merge.log" && grep -q "merged each source" "$TMP/c/merge.log"' "align + merge report"
"$PS" share "$GQA" --plan "$TMP/c/pr.json" --combine prune -o "$TMP/c/pruned" > "$TMP/c/prune.log" 2>&1 || bad "share --combine prune"
for d in merged pruned; do
  l=$("$PS" eval "$TMP/c/$d" "${EV[@]}" 2>&1 | grep -o 'val loss [0-9.]*')
  check '[ -n "$l" ]' "eval of the $d model"
done
expect_fail "merge without calib" "merge needs --calib" "$PS" share "$GQA" --plan "$TMP/c/calib.json" --combine merge -o "$TMP/c/x"
expect_fail "calib without data" "needs calibration data" "$PS" match "$GQA" --match calib -o "$TMP/x.json"
expect_fail "calib of another shape" "cal.bin.*calibration for 6 layers" "$PS" match "$MHA" --match calib --calib "$TMP/cal.bin" -o "$TMP/x.json"
expect_fail "importance without it in the file" "needs head importance.*--importance-tokens" "$PS" match "$GQA" --match importance --calib "$TMP/cal.bin" -o "$TMP/x.json"
# head importance: calibrate --importance-tokens, match --match importance
"$PS" calibrate "$GQA" --data "$TMP/data/t_val_*.bin" --tokens 256 --importance-tokens 64 --seq-len 32 -o "$TMP/cali.bin" > "$TMP/cali.log" 2>&1 || bad "calibrate --importance-tokens: $(cat "$TMP/cali.log")"
check 'grep -q "head importance of .* units on 64 tokens" "$TMP/cali.log"' "importance report: $(cat "$TMP/cali.log")"
"$PS" match "$GQA" --match importance --calib "$TMP/cali.bin" --ratio 0.4 --no-plot -o "$TMP/c/imp.json" > "$TMP/c.log" 2>&1 || bad "match importance: $(cat "$TMP/c.log")"
check 'grep -q "\"match\":[[:space:]]*\"importance\"" "$TMP/c/imp.json"' "importance plan"

# bad plans and bad runs leave the earlier output untouched
sum_before=$(cat "$TMP/compact"/* | md5sum)
expect_fail "fingerprint" "plan.json.*fingerprint mismatch.*--force" "$PS" share "$TMP/runs/mha2/model" --plan "$TMP/p/plan.json" -o "$TMP/compact"
expect_fail "other shape" "plan.json.*different model shape.*num_key_value_heads" "$PS" share "$GQA" --plan "$TMP/p/plan.json" -o "$TMP/compact"
"$PY" - "$TMP/p/plan.json" "$TMP/chain.json" <<'EOF'
import json, sys
p = json.load(open(sys.argv[1])); a, b = p["shared"][0], p["shared"][1]
b["source_layer"], b["source_head"] = a["layer"], a["head"]
json.dump(p, open(sys.argv[2], "w"))
EOF
expect_fail "chain" "chain.json.*chain" "$PS" share "$MHA" --plan "$TMP/chain.json" -o "$TMP/compact"
sed 's/"layer":[^,]*/"layer": 6/' "$TMP/p/plan.json" > "$TMP/range.json"
expect_fail "out of range" "range.json.*shared\[0\].*layer" "$PS" share "$MHA" --plan "$TMP/range.json" -o "$TMP/compact"
expect_fail "missing plan" "nope.json" "$PS" share "$MHA" --plan "$TMP/nope.json" -o "$TMP/compact"
expect_fail "unreachable ratio" "cannot replace 21 of 24.*at most 20" "$PS" match "$MHA" --ratio 0.9 -o "$TMP/x.json"
expect_fail "bad match" "match.*qx" "$PS" match "$MHA" --match qx -o "$TMP/x.json"
sum_after=$(cat "$TMP/compact"/* | md5sum)
check '[ "$sum_before" = "$sum_after" ] && ! ls "$TMP/compact"/*.tmp.* >/dev/null 2>&1' "a failed share changed the earlier output"
"$PS" share "$TMP/runs/mha2/model" --plan "$TMP/p/plan.json" -o "$TMP/forced" --force > /dev/null 2> "$TMP/err"
check '[ $? -eq 0 ] && grep -q "warning: --force" "$TMP/err"' "--force applies a plan made for other weights"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
