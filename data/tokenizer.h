// tokenizer.h: text <-> token ids. Two kinds behind one struct:
//
// byte: ids 0..255 are the bytes of the text; vocab_size 256; no BOS/EOS
//   (bos_id = eos_id = -1, add_bos is ignored). Every byte string round-trips.
//
// spm: a sentencepiece BPE vocabulary (LLaMA 1/2, llama2.c's tok512 ...), read
//   from llama2.c's tokenizer.bin or from the sentencepiece .model itself.
//   tokenizer.bin: int32 max_token_length, then per entry: float32 score,
//   int32 len, len bytes (sentencepiece's "▁" already replaced by ' '). The
//   vocabulary size is the number of entries read to EOF; ids 0/1/2 are
//   <unk>/<s>/</s> (llama2.c's convention) and "<0xHH>" pieces are byte tokens.
//
// Encoding reproduces sentencepiece's BPE ids exactly (tested against the
// python module on tinyshakespeare, TinyStories and WikiText lines):
//   1. normalize (sentencepiece's "identity" rule): invalid UTF-8 bytes become
//      U+FFFD; a literal U+2581 counts as a space; with remove_extra_ws, spaces
//      at the start and end are dropped and runs of spaces collapse to one;
//      with add_dummy_prefix, a space is prepended to non-empty text;
//   2. split into UTF-8 characters; repeatedly merge the adjacent pair whose
//      concatenation is a vocabulary piece of highest score (ties: leftmost),
//      using a heap (O(n log n), the order sentencepiece itself uses);
//   3. each resulting symbol maps to its piece id, or else to its bytes'
//      <0xHH> ids (byte fallback; <unk> when the vocabulary has no byte pieces).
//   Control, byte and unused pieces never take part in merges (as in
//   sentencepiece); user-defined pieces are treated as normal pieces.
//   Splitting: when no multi-character piece contains '\n' (true for LLaMA 2
//   and tok512), a '\n' can never merge, so the normalized text is cut at every
//   '\n' and each line is merged on its own, with the '\n' emitted as its own
//   token (newline_id). This gives the same ids as merging the whole text, and
//   keeps the heap small; otherwise the whole text is merged at once.
//   The normalizer flags are not in tokenizer.bin: llama2.c's encoder uses
//   add_dummy_prefix=1, remove_extra_ws=0 (LLaMA 2's settings). When a
//   sentencepiece model with the same stem sits beside the .bin (tok512.bin ->
//   tok512.model), its flags are used instead, so ids match what the model
//   was trained on (tok512 was trained with remove_extra_ws=1).
//
// Decoding one token follows llama2.c: after BOS a piece's leading space is
// dropped (the dummy prefix), and "<0xHH>" byte pieces decode to that byte.
//
// bpe: byte-level BPE (GPT-2 style: Llama 3, SmolLM2), from an HF
//   tokenizer.json, a tiktoken file (Llama 3's tokenizer.model) or a GGUF
//   file's tokenizer.ggml.* metadata; ids equal HF tokenizers' (see bpe.h).
//   pieces hold each token's raw bytes; special added tokens are
//   TOK_PIECE_CONTROL, other added tokens TOK_PIECE_USER. bos_id/eos_id are the
//   tokenizer's declared tokens (-1: none); tok_encode(add_bos=1) prepends BOS
//   only when the tokenizer's own convention does (its post-processor,
//   add_bos_token, or Llama 3's tiktoken usage). newline_id is -1.
//
// All functions are read-only on the Tokenizer, so encode/decode can run from
// several threads at once.
#pragma once

#include <stddef.h>

typedef enum { TOK_BYTE = 0, TOK_SPM = 1, TOK_BPE = 2 } TokKind;

typedef struct Tokenizer {
    TokKind kind;
    int vocab_size;
    int bos_id;            // -1 when none
    int eos_id;            // -1 when none
    int unk_id;            // -1 when none
    int newline_id;        // id that a lone '\n' always encodes to, or -1 when '\n' can merge
    int add_dummy_prefix;  // spm normalizer flags (see above); 0 for byte
    int remove_extra_ws;
    char desc[512];  // one line for logs: kind, file, sizes, flags
    // private (spm)
    char **piece;  // [vocab_size] NUL-terminated piece bytes ('▁' as ' ')
    int *piece_len;
    float *score;
    unsigned char *type;  // TOK_PIECE_* below
    int byte_id[256];     // id of "<0xHH>", or -1
    char bytes[256];      // bytes[b] == b: what byte tokens decode to
    int *hslot;           // open-addressing hash: mergeable piece string -> id (-1 empty)
    size_t hcap;
    struct BpeModel *bpe;  // private (bpe): merges, pre-tokenizer, added tokens (bpe.c)
} Tokenizer;

enum {
    TOK_PIECE_NORMAL = 1,
    TOK_PIECE_UNKNOWN = 2,
    TOK_PIECE_CONTROL = 3,
    TOK_PIECE_USER = 4,
    TOK_PIECE_UNUSED = 5,
    TOK_PIECE_BYTE = 6
};

// Open by spec: "byte"; "llama2c:PATH" or a PATH ending in .bin (tokenizer.bin);
// "sp:PATH" or a PATH ending in .model (sentencepiece BPE model; a tiktoken
// file there is opened as tiktoken, and refused after "sp:" with a hint);
// "tiktoken:PATH"; "hf:PATH" or a PATH ending in .json (HF tokenizer.json);
// "gguf:PATH" or a PATH ending in .gguf (the tokenizer.ggml.* metadata); a
// directory (its tokenizer.json, else its tokenizer.model).
// Returns NULL with ps_err set on any error (missing, truncated or corrupt file).
Tokenizer *tok_open(const char *spec);
void tok_free(Tokenizer *t);

// Encode len bytes of text; add_bos prepends bos_id (when there is one).
// Returns a malloc'd array of *n ids (free() it; never NULL).
int *tok_encode(const Tokenizer *t, const char *text, size_t len, int add_bos, size_t *n);

// Bytes of one token for streaming generation (llama2.c semantics): drops the
// leading space of a piece that follows BOS; byte pieces give their byte.
// The result points into the tokenizer (not NUL-terminated for byte tokens).
const char *tok_decode(const Tokenizer *t, int prev_token, int token, size_t *len);

// Decode a whole sequence (malloc'd, NUL-terminated, *len bytes): BOS/EOS give
// no text, and the leading space of the first piece and of a piece after BOS
// is dropped, so decode(encode(s)) == s for normalized text.
char *tok_decode_all(const Tokenizer *t, const int *ids, size_t n, size_t *len);

// The HF files of the tokenizer `spec` (tok_open's specs), written into dir for
// a model export (hf_io.h's hf_save_export), so that transformers'
// AutoTokenizer loads it from the model folder:
//   byte            tokenizer.json: byte-level BPE, 256 tokens (id = byte), no merges
//   an HF folder or tokenizer.json: tokenizer.json, tokenizer_config.json,
//                   special_tokens_map.json, tokenizer.model, added_tokens.json,
//                   vocab.json, merges.txt that are there, copied byte for byte
//   GGUF            byte-level BPE (tokenizer.ggml.model gpt2): tokenizer.json
//                   written from the metadata (tokgguf.c), tokenizer_config.json,
//                   special_tokens_map.json; sentencepiece GGUFs (llama): none
//   sentencepiece   tokenizer.model copied (from sp:/*.model, or the .model beside a
//                   llama2.c tokenizer.bin), tokenizer_config.json (LlamaTokenizer)
//                   and special_tokens_map.json; a tokenizer.bin alone: none
//   tiktoken alone  none (pass the model folder that holds its tokenizer.json)
// ids: the tokenizer's bos, eos and pad ids (-1: none). Returns 1 when the files
// were written, 0 when this tokenizer has no HF form here (note says why), -1
// with ps_err set (an unreadable tokenizer, a failed write).
int tok_export_hf(const char *spec, const char *dir, int ids[3], char *note, size_t note_cap);
// 0 when the tokenizer `spec` opens and its ids fit a model of model_vocab
// tokens; -1 with ps_err set otherwise.
int tok_check_vocab(const char *spec, int model_vocab);
