#!/usr/bin/env python3
"""sp_ids.py: reference token ids from the sentencepiece python module, for
tests/test_tokenizer.c.

usage: sp_ids.py MODEL [--whole] < text
  default  encode every line of stdin on its own (split on b'\\n'; a final
           newline does not start another line), without BOS, and print one
           line of space-separated ids per input line
  --whole  encode all of stdin as one text and print its ids on one line
Exit status 2 (with a message) when the sentencepiece module is missing.
"""
import sys

try:
    import sentencepiece as spm
except ImportError:
    sys.stderr.write("sp_ids.py: python module 'sentencepiece' not found\n")
    sys.exit(2)


def main():
    if len(sys.argv) < 2:
        sys.stderr.write(__doc__)
        sys.exit(1)
    sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
    data = sys.stdin.buffer.read()
    out = sys.stdout
    if "--whole" in sys.argv[2:]:
        out.write(" ".join(map(str, sp.encode(data.decode("utf-8")))) + "\n")
        return
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()
    for line in lines:
        out.write(" ".join(map(str, sp.encode(line.decode("utf-8")))) + "\n")


main()
