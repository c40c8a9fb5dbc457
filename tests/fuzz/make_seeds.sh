#!/usr/bin/env bash
# make_seeds.sh BUILD_DIR: (re)make the seed corpora tests/fuzz/corpus/<parser>/ from the
# repo's own fixtures and small files written by our own writers (python3 stdlib only,
# plus BUILD_DIR/postshare and, for checkpoints, BUILD_DIR/fuzz_ckpt of a
# -DPOSTSHARE_FUZZ=ON build). Every seed is a few KiB at most.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="$(cd "${1:?usage: make_seeds.sh BUILD_DIR}" && pwd)"
c="$here/corpus"
mkdir -p "$c"/{safetensors,config,index,plan,job,shard,llama2c,tokbin,spm,ckpt,tasks,calib}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# config.json: the fixtures' and variants
cp "$root/tests/fixtures/gqa_tied/config.json" "$c/config/gqa_tied.json"
cp "$root/tests/fixtures/mha_untied/config.json" "$c/config/mha_untied.json"

# job: the shipped small configs, one with --set lines
cp "$root/configs/tiny.yaml" "$c/job/tiny.yaml"
{ cat "$root/configs/tiny.yaml"; printf '#--set\ntrain.lr=0.01\ntrain.betas=[0.9,0.95]\nshare.ratio=0.25\n'; } > "$c/job/tiny_set.yaml"

# plan: postshare match on the GQA fixture, and its compact model's config
"$build/postshare" match "$root/tests/fixtures/gqa_tied" --ratio 0.5 -o "$tmp/plan.json" > /dev/null
cp "$tmp/plan.json" "$c/plan/gqa_tied.json"

# shard: prepare on a short text (byte tokens)
printf 'In the beginning God created the heaven and the earth.\n' > "$tmp/t.txt"
"$build/postshare" prepare --tokenizer byte --out "$tmp/sh" --prefix s --val-fraction 0 "$tmp/t.txt" > /dev/null
cp "$tmp"/sh/s_train_000000.bin "$c/shard/byte.bin"

# checkpoint: written by ckpt_write (with and without a plan)
PS_FUZZ_WRITE_SEED="$c/ckpt/tiny.h5" "$build/fuzz_ckpt"
PS_FUZZ_SEED_PLAN='{"x": 1}' PS_FUZZ_WRITE_SEED="$c/ckpt/tiny_plan.h5" "$build/fuzz_ckpt"

python3 - "$c" "$root" <<'PY'
import json, struct, sys
c = sys.argv[1]
# safetensors: three small tensors of the dtypes we read
hdr = {"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
       "b": {"dtype": "BF16", "shape": [4], "data_offsets": [24, 32]},
       "c": {"dtype": "F16", "shape": [2, 2], "data_offsets": [32, 40]},
       "__metadata__": {"format": "pt"}}
h = json.dumps(hdr).encode()
h += b" " * (-len(h) % 8)
open(f"{c}/safetensors/small.safetensors", "wb").write(
    struct.pack("<Q", len(h)) + h + struct.pack("<6f", *range(6)) + bytes(range(16)))
# index for the fuzz_index harness's model (2 layers, tied): layer 0 in a, the rest in b
names = ["model.embed_tokens.weight"]
for l in range(2):
    names += [f"model.layers.{l}.{s}" for s in (
        "input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
        "self_attn.v_proj.weight", "self_attn.o_proj.weight", "post_attention_layernorm.weight",
        "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight")]
names.append("model.norm.weight")
wm = {n: ("a.safetensors" if i < 10 else "b.safetensors") for i, n in enumerate(names)}
json.dump({"metadata": {"total_size": 0}, "weight_map": wm}, open(f"{c}/index/two_shards.json", "w"), indent=1)
# llama2.c: dim 8, hidden 16, 1 layer, 2 heads, 2 kv heads, vocab 16 (tied), seq 4
dim, hid, L, nh, nkv, V, T = 8, 16, 1, 2, 2, 16, 4
kv = dim * nkv // nh
n = V*dim + L*dim + L*dim*dim + 2*L*kv*dim + L*dim*dim + L*dim + 3*L*hid*dim + dim + T*(dim//nh)
open(f"{c}/llama2c/tiny.bin", "wb").write(
    struct.pack("<7i", dim, hid, L, nh, nkv, V, T) + struct.pack(f"<{n}f", *[0.01*(i % 7) for i in range(n)]))
# tokenizer.bin: <unk> <s> </s>, 256 byte pieces, a few merges
pieces = [("<unk>", 0.0), ("<s>", 0.0), ("</s>", 0.0)] + [(f"<0x{b:02X}>", 0.0) for b in range(256)]
pieces += [(" t", -1.0), ("he", -2.0), (" the", -3.0), ("in", -4.0), (" a", -5.0)]
out = struct.pack("<i", 8)
for p, s in pieces:
    b = p.encode()
    out += struct.pack("<fi", s, len(b)) + b
open(f"{c}/tokbin/tiny.bin", "wb").write(out)
# sentencepiece .model: the same pieces as a BPE ModelProto
def varint(v):
    o = b""
    while True:
        b, v = v & 0x7f, v >> 7
        o += bytes([b | (0x80 if v else 0)])
        if not v: return o
def field(n, wt, payload):
    return varint(n << 3 | wt) + (varint(len(payload)) + payload if wt == 2 else payload)
m = b""
for i, (p, s) in enumerate(pieces):
    t = 2 if i == 0 else 3 if i < 3 else 6 if p.startswith("<0x") else 1
    pm = field(1, 2, p.replace(" ", "\u2581").encode()) + field(2, 5, struct.pack("<f", s)) + field(3, 0, varint(t))
    m += field(1, 2, pm)
m += field(2, 2, field(3, 0, varint(2)) + field(40, 0, varint(0)) + field(41, 0, varint(1)) + field(42, 0, varint(2)))
m += field(3, 2, field(1, 2, b"identity") + field(3, 0, varint(1)))
open(f"{c}/spm/tiny.model", "wb").write(m)
# tasks: the first byte picks the reader (fuzz_tasks.c); the fixtures of tests/fixtures/tasks
# and rows in each format of tests/test_tasks.c
fx = sys.argv[2] + "/tests/fixtures/tasks"
def seed(name, sel, body):
    open(f"{c}/tasks/{name}", "wb").write(bytes([sel]) + body)
seed("piqa", 0, open(f"{fx}/piqa/valid.jsonl", "rb").read() + b"\0" + open(f"{fx}/piqa/valid-labels.lst", "rb").read())
seed("hellaswag", 1, b'{"activity_label": "Removing ice", "ctx_a": "A man [header] stands.", "ctx_b": '
     b'"THE man", "endings": ["  scrapes [title] the car.", "x  y", "z [a] [b]c", "w"], "label": 2}\n')
seed("lambada", 2, b'{"text": "He said hello to Bob"}\n{"text": "aaaa aaaa"}\n')
seed("user", 3, b'{"query": "Q: sky", "choices": ["blue", "green"], "gold": 0}\n\n'
     b'{"query": "x", "choices": ["yes", "no"], "gold": 1}\n')
seed("mmlu", 4, open(f"{fx}/mmlu/mmlu.zip", "rb").read())
seed("defs", 5, b'[{"name": "mine", "file": "mine.jsonl", "strip": "Q: ", "prefix": "<", '
     b'"suffix": ">", "metrics": ["acc", "acc_norm"]}]')
PY
# calibration files (trainer/calib.h's layout): 2 layers x 2 units, dim 4, unit width 2;
# Grams only, + head importance, + importance and measured damage
python3 - "$c/calib" <<'PY'
import struct, sys
d = sys.argv[1]
L, U, C, W = 2, 2, 4, 2
grams = b"PSCALIB1" + struct.pack("<5q", L, U, C, W, 64)
grams += struct.pack(f"<{L*C*C}d", *[float(i % 5) for i in range(L * C * C)])
grams += struct.pack(f"<{L*U*W*W}d", *[float(i % 3) for i in range(L * U * W * W)])
imp = b"PSIMP001" + struct.pack("<qd", 16, 3.5) + struct.pack(f"<{L*U}d", 0, 0, 0.1, -0.2)
dmg = b"PSDMG001" + struct.pack("<qd", 16, 3.5) + struct.pack(f"<{L*U}d", 0, 0, 0.05, -0.01)
dmg += struct.pack(f"<{L*U}i", -1, -1, 1, 0)
for name, data in (("grams", grams), ("imp", grams + imp), ("imp_dmg", grams + imp + dmg),
                   ("dmg", grams + dmg)):
    open(f"{d}/{name}.grams", "wb").write(data)
PY
ls -la "$c"/*
