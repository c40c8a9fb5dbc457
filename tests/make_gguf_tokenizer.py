"""A vocabulary-only GGUF file (no tensors) holding the tokenizer of an HF
byte-level BPE tokenizer.json as llama.cpp's converter stores it for Llama 3
(tokenizer.ggml.model gpt2, pre llama-bpe): tokens by id (added tokens by their
content), token types (3 special, 4 other added, 1 normal), merges "a b", bos/eos.
For tests/test_bpe_hf.sh (its venv has the gguf package).

usage: make_gguf_tokenizer.py TOKENIZER_JSON OUT.gguf [BOS_ID EOS_ID]
"""
import json
import sys

from gguf import GGUFWriter


def main():
    src, out = sys.argv[1], sys.argv[2]
    bos, eos = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else (128000, 128001)
    j = json.load(open(src, encoding="utf-8"))
    vocab, added = j["model"]["vocab"], j["added_tokens"]
    n = max(max(vocab.values()), max(a["id"] for a in added)) + 1
    tokens, types = [None] * n, [1] * n
    for t, i in vocab.items():
        tokens[i] = t
    for a in added:
        tokens[a["id"]] = a["content"]
        types[a["id"]] = 3 if a["special"] else 4
    if None in tokens:
        raise SystemExit(f"{src}: ids are not contiguous (id {tokens.index(None)} is missing)")
    merges = [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]]
    w = GGUFWriter(out, "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"{out}: {n} tokens, {len(merges)} merges, bos {bos}, eos {eos}")


if __name__ == "__main__":
    main()
