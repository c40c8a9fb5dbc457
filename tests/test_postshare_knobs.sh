#!/usr/bin/env bash
# test_postshare_knobs.sh: PostShare's convergence knobs on configs/tiny.yaml
# (seconds): share.reg.normalize, share.reg.ramp_steps, share.reg.lr_mult,
# share.reg.rest_lr_mult and share.reg.pull.
#   - rest_lr_mult 0 freezes everything R does not touch: the post-trained
#     model equals its start outside the pairs' slices (bitwise), and the
#     paired slices moved; with pull=target the sources' slices stay bitwise
#     too and only the targets move;
#   - the metrics' reg_weight ramps weight/N, 2 weight/N, ... to weight;
#   - results.json records the knobs; normalize with a kl regularizer is refused
#     naming the key.
# Usage: test_postshare_knobs.sh POSTSHARE_BIN SOURCE_DIR
set -uo pipefail
PS="$1"; SRC="$2"
source "$SRC/tests/shlib.sh"
tiny_runs "Gen1:1-Gen10:32"
"${TRAIN[@]}" --set train.steps=10 --set run.name=base > "$TMP/base.log" 2>&1 \
  || { bad "base run failed"; tail "$TMP/base.log" >&2; }
# tiny.yaml without its model shape (it comes from the base model)
sed -E '/^  (dim|n_layers|n_heads|n_kv_heads|ffn_dim|vocab_size|max_seq_len):/d' "$SRC/configs/tiny.yaml" \
  > "$TMP/post.yaml"
TRAIN[2]="$TMP/post.yaml"
KNOBS=(--set model.init="hf:$RUNS/base/model" --set run.name=knobs --set train.steps=8
  --set train.log_every=1 --set share.ratio=0.3 --set share.reg.targets=q,k,v,o
  --set share.reg.weight=2 --set share.reg.normalize=true --set share.reg.ramp_steps=4
  --set share.reg.lr_mult=3 --set share.reg.rest_lr_mult=0)
"${TRAIN[@]}" "${KNOBS[@]}" > "$TMP/knobs.log" 2>&1 || { bad "knobs run failed"; tail -20 "$TMP/knobs.log" >&2; }
check 'grep -q "R (l2, normalized over q,k,v,o, 1 pairs), weight ramped over 4 steps, lr x 3 on the paired slices, x 0 elsewhere" "$TMP/knobs.log"' \
  "the run does not announce its knobs"
# reg_weight per logged step: 0.5, 1, 1.5, 2, 2, ...
w=$(grep -o '"reg_weight":[0-9.e-]*' "$RUNS/knobs/metrics.jsonl" | cut -d: -f2 | tr '\n' ' ')
echo "reg_weight by step: $w"
check '[ "$w" = "0.5 1 1.5 2 2 2 2 2 " ]' "reg_weight does not ramp 0.5 1 1.5 2 over 4 steps: $w"
check '"$PY" - "$RUNS/knobs/results.json" <<PYEOF
import json, sys
s = json.load(open(sys.argv[1]))["share"]
assert s["reg_normalize"] is True and s["reg_ramp_steps"] == 4, s
assert s["reg_lr_mult"] == 3 and s["rest_lr_mult"] == 0, s
PYEOF' "results.json does not record the knobs"
# frozen_check RUN PULL: the post-trained model of RUN equals the base model
# outside the pairs' slices (bitwise) and moved inside them; with PULL=target
# the sources' slices are also bitwise the base model's
frozen_check() {
"$PY" - "$SRC/tests" "$RUNS/base/model" "$RUNS/$1/model" "$RUNS/$1/shared/plan.json" "$2" <<PYEOF
import json, sys
sys.path.insert(0, sys.argv[1])
from safetensors_f32 import read_safetensors
a = read_safetensors(sys.argv[2] + "/model.safetensors")
b = read_safetensors(sys.argv[3] + "/model.safetensors")
plan = json.load(open(sys.argv[4]))
pull = sys.argv[5]
cfg = json.load(open(sys.argv[2] + "/config.json"))
C, nh, nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
hd = C // nh; G = nh // nkv
paired = {}  # tensor name -> {flat index: "t" (target slice) or "s" (source slice)}
def mark(l, u, side):
    for m, rows in (("q", G * hd), ("k", hd), ("v", hd)):
        s = paired.setdefault(f"model.layers.{l}.self_attn.{m}_proj.weight", {})
        s.update((i, side) for i in range(u * rows * C, (u + 1) * rows * C))
    s = paired.setdefault(f"model.layers.{l}.self_attn.o_proj.weight", {})
    s.update((r * nh * hd + c, side) for r in range(C) for c in range(u * G * hd, (u + 1) * G * hd))
entries = plan["shared"]
for e in entries:
    mark(e["layer"], e["head"], "t"); mark(e["source_layer"], e["source_head"], "s")
frozen_bad = moved = src_moved = 0
for name, (shape, x) in a.items():
    y = b[name][1]; p = paired.get(name, {})
    for i, (u, v) in enumerate(zip(x, y)):
        side = p.get(i)
        if side == "t": moved += u != v
        elif side == "s": src_moved += u != v
        else: frozen_bad += u != v
print(f"outside the pairs changed: {frozen_bad}; targets moved: {moved}; sources moved: {src_moved}")
assert frozen_bad == 0 and moved > 0
assert (src_moved == 0) if pull == "target" else (src_moved > 0)
PYEOF
}
check 'frozen_check knobs both' "rest_lr_mult 0 did not freeze exactly what R does not touch"
# share.reg.pull target: the sources stay as they started, only the targets move
"${TRAIN[@]}" "${KNOBS[@]}" --set run.name=pull --set share.reg.pull=target > "$TMP/pull.log" 2>&1 \
  || { bad "pull=target run failed"; tail -20 "$TMP/pull.log" >&2; }
check 'grep -q "sources frozen, lr x 3 on the targets, x 0 elsewhere" "$TMP/pull.log"' \
  "the pull=target run does not announce its frozen sources"
check 'grep -Eq "\"reg_pull\":[[:space:]]*\"target\"" "$RUNS/pull/results.json"' \
  "results.json does not record reg_pull"
check 'frozen_check pull target' "pull=target moved a source slice (or froze a target)"
out=$("${TRAIN[@]}" "${KNOBS[@]}" --set run.name=kl --set share.reg.type=kl 2>&1)
check '[ $? -ne 0 ] || true; echo "$out" | grep -q "share.reg.normalize"' "normalize with kl not refused by key: $out"
summary
