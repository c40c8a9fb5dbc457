"""Cross-check `postshare tokenize` against HF `tokenizers` (the Python package).

usage: bpe_hf_check.py POSTSHARE WORKDIR CASE...   where CASE is LABEL=SPEC=HF_JSON
  SPEC     our tokenizer spec (tokenizer.json, tiktoken:FILE, gguf:FILE, ...)
           (REF: the HF_JSON file, e.g. the one built from a GGUF file)
  HF_JSON  the tokenizer.json that HF tokenizers loads as the reference, or
           gguf:FILE to build one from a GGUF file's tokenizer.ggml.* metadata
           (with the gguf package; see hf_json_from_gguf)
Texts: every file given by --text (line by line and whole) plus the edge cases
below. Invalid UTF-8 reaches HF as bytes.decode('utf-8', 'replace'), which is
what our encoder does to it. Prints one summary line per case and text; exits 1
on any mismatch or failed round trip.
"""
import json
import os
import subprocess
import sys
import time

from tokenizers import Tokenizer

EDGE = [
    b"",
    b" ",
    b"   ",
    b"\n",
    b"\n\n\n",
    b"a\n\nb\r\n\r\nc",
    b"  leading and trailing  ",
    b"tabs\tand\t\tmore\t",
    b"x" + b" " * 40 + b"y" + b" " * 17,
    b"\t \n \t\n  \n",
    b"12345678901234567890 3.14159 1,000,000 007",
    b"I'm you're he's we've they'll she'd IT'S DON'T y'all 'tis",
    b"Emoji: \xf0\x9f\x98\x80\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd \xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7",
    "中文字符测试，日本語のテキスト、한국어 텍스트。".encode(),
    "Ünïcödé façade naïve résumé — “quotes” ‘single’ … ½ ² ⁴ ٣".encode(),
    "nbsp\u00a0here\u3000ideographic\u2028line\u2029para\u0085nel\u200bzwsp".encode(),
    "Straße ſtraße Kelvin \u212a 'ſ 'S".encode(),
    b"invalid \xff\xfe bytes \xc3 cut \xe2\x82 end \xed\xa0\x80 surrogate \xf4\x90\x80\x80 \xc0\xaf",
    b"\xe2\x82",
    b"code: for(i=0;i<10;i++){x+=i*2;} // comment\n    return x;",
    b"URL https://example.com/a?b=c&d=e#f mail a.b@c.de",
    b"<|begin_of_text|>Hello<|end_of_text|>",
    b"text <|begin_of_text|> mid <|eot_id|><|start_header_id|>user<|end_header_id|>\n\nhi",
    b"<|begin_of_text|<|begin_of_text|>> partial <|reserved_special_token_250|>",
    b"<|im_start|>system\nYou are helpful<|im_end|>\n<|im_start|>user\nhi<|im_end|>",
    b"<|endoftext|><|endoftext|>end<|endoftext|>",
    b"\x00nul\x00bytes\x01\x1f\x7f",
    b"a" * 3000,
    b"!!!???...,,,;;;:::---___***",
]


def hf_json_from_gguf(path, out):
    """A tokenizer.json for a GGUF file's BPE tokenizer (tokenizer.ggml.model
    'gpt2'), as llama.cpp's pre-tokenizer names describe it."""
    from gguf import GGUFReader

    r = GGUFReader(path)

    def field(name):
        f = r.fields.get(name)
        return None if f is None else f

    def strings(name):
        f = field(name)
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    def scalar(name):
        f = field(name)
        return None if f is None else f.parts[f.data[0]].tolist()[0]

    model = bytes(field("tokenizer.ggml.model").parts[-1]).decode()
    pre = bytes(field("tokenizer.ggml.pre").parts[-1]).decode()
    assert model == "gpt2", f"{path}: tokenizer.ggml.model {model} is not gpt2"
    tokens = strings("tokenizer.ggml.tokens")
    merges = strings("tokenizer.ggml.merges")
    types = [int(field("tokenizer.ggml.token_type").parts[i][0]) for i in field("tokenizer.ggml.token_type").data]
    bytelevel = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    if pre == "smollm":
        pretok = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, bytelevel]}
        ignore = False
    elif pre == "llama-bpe":
        pat = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
               "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
        pretok = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pat}, "behavior": "Isolated", "invert": False},
            dict(bytelevel, use_regex=False)]}
        ignore = True
    elif pre in ("gpt-2", "default"):
        pretok = bytelevel
        ignore = False
    else:
        raise SystemExit(f"{path}: pre-tokenizer '{pre}' unknown to this script")
    added = [{"id": i, "content": tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, ty in enumerate(types) if ty in (3, 4)]
    j = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
         "pre_tokenizer": pretok, "post_processor": {"type": "ByteLevel", "add_prefix_space": False,
                                                    "trim_offsets": True, "use_regex": True},
         "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
         "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                   "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                   "ignore_merges": ignore, "vocab": {t: i for i, t in enumerate(tokens)},
                   "merges": merges}}
    with open(out, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False)
    return out


def ours(postshare, spec, paths, lines):
    """Our ids: one list per file (or per line of the one file with lines)."""
    cmd = [postshare, "tokenize", "--tokenizer", spec] + (["--lines"] if lines else []) + list(paths)
    p = subprocess.run(cmd, capture_output=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr.decode(errors='replace')}")
    out = p.stdout.decode().split("\n")
    assert out[-1] == ""
    speed = [l for l in p.stderr.decode().splitlines() if "tokens/s" in l]
    return [[int(x) for x in l.split()] for l in out[:-1]], (speed[0] if speed else "")


def split_lines(data):
    parts = data.split(b"\n")
    if len(parts) > 1 and parts[-1] == b"":
        parts.pop()
    return parts


def main():
    args = sys.argv[1:]
    texts = []
    while "--text" in args:
        i = args.index("--text")
        texts.append(args[i + 1])
        del args[i:i + 2]
    postshare, work = args[0], args[1]
    os.makedirs(work, exist_ok=True)
    edge_dir = os.path.join(work, "edge")
    os.makedirs(edge_dir, exist_ok=True)
    edge_files = []
    for k, e in enumerate(EDGE):
        p = os.path.join(edge_dir, f"edge{k:02d}.txt")
        with open(p, "wb") as f:
            f.write(e)
        edge_files.append(p)
    failed = total_lines = total_bad = 0
    for case in args[2:]:
        label, spec, ref = case.split("=", 2)
        if ref.startswith("gguf:"):
            ref = hf_json_from_gguf(ref[5:], os.path.join(work, label + ".tokenizer.json"))
        if spec == "REF":  # our tokenizer reads the reference tokenizer.json too
            spec = ref
        hf = Tokenizer.from_file(ref)
        whole, _ = ours(postshare, spec, edge_files, False)
        for path in texts + edge_files:
            data = open(path, "rb").read()
            name = os.path.relpath(path, os.path.dirname(os.path.dirname(path)))
            speed = ""
            if path in texts:
                (got,), speed = ours(postshare, spec, [path], False)
            else:
                got = whole[edge_files.index(path)]
            t0 = time.time()
            want = hf.encode(data.decode("utf-8", "replace"), add_special_tokens=False).ids
            hf_s = time.time() - t0
            bad_whole = got != want
            # line by line (edge cases are checked whole only)
            bad_lines, nlines = 0, 0
            if path in texts:
                got_l, _ = ours(postshare, spec, [path], True)
                lines = [l.decode("utf-8", "replace") for l in split_lines(data)]
                want_l = [e.ids for e in hf.encode_batch(lines, add_special_tokens=False)]
                nlines = len(lines)
                if len(got_l) != nlines:
                    print(f"  {label} {name}: {len(got_l)} lines of ids for {nlines} lines")
                    bad_lines = nlines
                else:
                    for i, (g, w) in enumerate(zip(got_l, want_l)):
                        if g != w:
                            bad_lines += 1
                            if bad_lines <= 3:
                                print(f"  {label} {name} line {i} {lines[i][:60]!r}: ours {g[:16]} hf {w[:16]}")
            if bad_whole:
                k = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
                print(f"  {label} {name} whole: first difference at token {k}: ours {got[k:k + 8]} hf {want[k:k + 8]}"
                      f" ({len(got)} vs {len(want)} tokens)")
            # decode round trip: HF decodes our ids to the text
            rt = hf.decode(got, skip_special_tokens=False) == data.decode("utf-8", "replace")
            failed += bad_whole + bad_lines + (not rt)
            total_lines += nlines
            total_bad += bad_lines + bad_whole
            if path in texts or bad_whole or not rt:
                print(f"{label:10s} {name:42s} {len(want):8d} tokens whole {'ok' if not bad_whole else 'MISMATCH'}"
                      f", {nlines} lines {bad_lines} mismatching, round trip {'ok' if rt else 'FAILED'}"
                      + (f"; hf {len(want) / max(hf_s, 1e-9):.0f} tokens/s, ours: {speed.split('(')[1].split(',')[0]}"
                         if speed else ""))
        print(f"{label:10s} {len(edge_files)} edge cases checked whole")
    print(f"{total_lines} lines compared, {total_bad} mismatching (lines + whole texts); "
          + ("FAILED" if failed else "all equal"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
