#!/usr/bin/env python3
"""Write an HF tokenizer (tokenizer.json + tokenizer_config.json) that encodes
exactly as a sentencepiece BPE .model does, for lm-evaluation-harness on a model
whose tokenizer is only a .model (stories260K's tok512.model).

transformers 5 no longer converts such a .model by itself. The BPE merges are
every pair of pieces whose concatenation is a piece, ranked by that piece's
score (sentencepiece merges the highest-scoring pair first); the normalizer
reproduces the model's flags (remove_extra_whitespaces: strip the ends and
collapse runs of spaces; add_dummy_prefix: the Metaspace prepend). The script
checks itself against sentencepiece on the strings given with --check.

usage: make_spm_hf_tokenizer.py TOKENIZER.model OUT_DIR [--check FILE.txt]
"""
import json
import sys

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb
from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE


def main():
    model_path, out = sys.argv[1], sys.argv[2]
    m = pb.ModelProto()
    m.ParseFromString(open(model_path, "rb").read())
    ns = m.normalizer_spec
    assert m.trainer_spec.model_type == pb.TrainerSpec.BPE, "only BPE models"
    vocab = {p.piece: i for i, p in enumerate(m.pieces)}
    score = {p.piece: p.score for p in m.pieces}
    normal = {p.piece for p in m.pieces if p.type in (pb.ModelProto.SentencePiece.NORMAL,
                                                      pb.ModelProto.SentencePiece.USER_DEFINED)}
    merges = []
    for piece in normal:
        for k in range(1, len(piece)):
            a, b = piece[:k], piece[k:]
            if a in vocab and b in vocab and (len(a) == 1 or a in normal) and (len(b) == 1 or b in normal):
                merges.append((a, b, score[piece], vocab[piece]))
    merges.sort(key=lambda x: (-x[2], x[3]))
    bpe = BPE(vocab=vocab, merges=[(a, b) for a, b, _, _ in merges], unk_token="<unk>",
              fuse_unk=True, byte_fallback=True)
    tok = Tokenizer(bpe)
    norms = []
    if ns.remove_extra_whitespaces:
        norms += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(r" {2,}"), " ")]
    if norms:
        tok.normalizer = normalizers.Sequence(norms)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="▁", prepend_scheme="always" if ns.add_dummy_prefix else "never", split=False)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    tok.save(f"{out}/tokenizer.json")
    json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
               "unk_token": "<unk>", "add_bos_token": True, "model_max_length": 1000000},
              open(f"{out}/tokenizer_config.json", "w"), indent=1)
    if "--check" in sys.argv:
        sp = spm.SentencePieceProcessor(model_file=model_path)
        lines = open(sys.argv[sys.argv.index("--check") + 1], encoding="utf-8").read().split("\n\x00\n")
        bad = 0
        for s in lines:
            a, b = sp.encode(s), tok.encode(s, add_special_tokens=False).ids
            if a != b:
                bad += 1
                if bad <= 3:
                    print("MISMATCH", repr(s[:80]), a[:20], b[:20])
        print(f"checked {len(lines)} strings against sentencepiece: {bad} differ")
        sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
