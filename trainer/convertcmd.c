// convertcmd.c: `postshare convert MODEL -o DIR [--dtype float32|bfloat16]`: load
// any model the loader reads (modelsrc.h: HF, llama2.c, GGUF, a checkpoint, a
// compact shared model, which is materialized) and write it as an HF directory
// (config.json + model.safetensors) that transformers loads, with the source's
// special ids, generation_config.json and tokenizer files (model_export_info;
// --tokenizer replaces the tokenizer). GGUF weights come out dequantized (fp32
// by default, so nothing is rounded again).
#include "convertcmd.h"

#include <stdio.h>
#include <string.h>

#include "cliargs.h"
#include "common.h"
#include "hf_io.h"
#include "modelsrc.h"
#include "tokenizer.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: postshare convert MODEL -o DIR [--dtype float32|bfloat16] [--tokenizer SPEC]\n"
            "  MODEL          hf:DIR, llama2c:FILE.bin, gguf:FILE.gguf, ckpt:FILE.h5, shared:DIR\n"
            "                 or a path (a compact shared model is materialized)\n"
            "  -o, --out DIR  the HF directory to write (config.json + model.safetensors)\n"
            "  --dtype T      float32 (default) or bfloat16\n"
            "  --tokenizer S  the tokenizer written beside the model (tokenizer.json ...);\n"
            "                 default: the source's (an HF folder's files, a GGUF's metadata)\n");
}

int convertcmd_main(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *dtype = "float32", *tok = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int has_next = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if ((!strcmp(a, "-o") || !strcmp(a, "--out")) && has_next) {
            out = argv[++i];
        } else if (!strcmp(a, "--dtype") && has_next) {
            dtype = argv[++i];
        } else if (!strcmp(a, "--tokenizer") && has_next) {
            tok = argv[++i];
        } else {
            cli_positional("convert", a, &model, "MODEL");
        }
    }
    if (!model || !out) {
        usage(stderr);
        ps_die("convert: MODEL and -o DIR are required");
    }
    HfExport x;
    if (model_export_info(model, tok, &x) != 0) ps_die("convert: %s", ps_err_msg());
    HostWeights w;
    if (model_load_any(model, &w) != 0) ps_die("%s", ps_err_msg());
    if (tok && tok_check_vocab(tok, w.t.cfg.vocab_size) != 0)
        ps_die("convert: --tokenizer: %s", ps_err_msg());
    if (hf_save_export(out, &w, dtype, &x) != 0) ps_die("convert: %s", ps_err_msg());
    const LlamaConfig *c = &w.t.cfg;
    printf("wrote %s (%s): L%d C%d heads %d/%d hd %d F%d V%d%s, rope %s, %zu parameters\n", out,
           dtype, c->n_layers, c->dim, c->n_heads, c->n_kv_heads, cfg_head_dim(c), c->ffn_dim,
           c->vocab_size, c->tie_embeddings ? " tied" : "", rope_type_name(c->rope_type),
           w.t.total);
    host_weights_free(&w);
    return 0;
}
