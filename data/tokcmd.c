// tokcmd.c: `postshare tokenize --tokenizer SPEC [--lines] [--bos] FILE...`:
// the ids of each file (or of each line, without its '\n'), one line of
// space-separated ids per file or line; the speed goes to stderr.
// `--export DIR`: the tokenizer's HF files into DIR instead (tok_export_hf).
#define _POSIX_C_SOURCE 200809L
#include "tokcmd.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "tokenizer.h"

static const char *k_usage =
    "usage: postshare tokenize --tokenizer SPEC [--lines] [--bos] [--quiet] FILE...\n"
    "       postshare tokenize --tokenizer SPEC --export DIR\n"
    "\n"
    "Print the token ids of each FILE ('-' = stdin) as one line of space-separated ids;\n"
    "with --lines, one line of ids per line of text (the '\\n' excluded). --bos adds the\n"
    "tokenizer's BOS where it adds one; --quiet prints only the counts and the speed\n"
    "(stderr). --export writes the tokenizer's HF files (tokenizer.json ..., what model\n"
    "exports carry) into DIR.\n";

static void print_ids(const int *ids, size_t n, FILE *f) {
    char buf[16];
    for (size_t i = 0; i < n; i++) {
        int l = snprintf(buf, sizeof buf, i ? " %d" : "%d", ids[i]);
        fwrite(buf, 1, (size_t)l, f);
    }
    fputc('\n', f);
}

static int export_main(const char *spec, const char *dir) {
    int ids[3];
    char note[512];
    int rc = ps_mkdirs(dir) == 0 ? tok_export_hf(spec, dir, ids, note, sizeof note) : -1;
    if (rc < 0) {
        fprintf(stderr, "postshare tokenize: error: %s\n", ps_err_msg());
        return 1;
    }
    if (rc == 0) {
        fprintf(stderr, "postshare tokenize: error: nothing written: %s\n", note);
        return 1;
    }
    printf("wrote the HF files of tokenizer %s into %s (bos %d, eos %d, pad %d)\n", spec, dir,
           ids[0], ids[1], ids[2]);
    return 0;
}

int tokenize_main(int argc, char **argv) {
    const char *spec = NULL, *export_dir = NULL;
    int lines = 0, bos = 0, quiet = 0, nfiles = 0;
    const char **files = xcalloc((size_t)argc + 1, sizeof(char *));
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(k_usage, stdout);
            free(files);
            return 0;
        } else if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc) {
            spec = argv[++i];
        } else if (!strcmp(argv[i], "--export") && i + 1 < argc) {
            export_dir = argv[++i];
        } else if (!strcmp(argv[i], "--lines")) {
            lines = 1;
        } else if (!strcmp(argv[i], "--bos")) {
            bos = 1;
        } else if (!strcmp(argv[i], "--quiet")) {
            quiet = 1;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "postshare tokenize: error: unknown option '%s'\n%s", argv[i], k_usage);
            free(files);
            return 2;
        } else {
            files[nfiles++] = argv[i];
        }
    }
    if (spec && export_dir && nfiles == 0) {
        free(files);
        return export_main(spec, export_dir);
    }
    if (!spec || nfiles == 0 || export_dir) {
        fprintf(stderr,
                "postshare tokenize: error: --tokenizer and a FILE (or --export DIR alone) are "
                "required\n%s",
                k_usage);
        free(files);
        return 2;
    }
    double t0 = ps_now();
    Tokenizer *tok = tok_open(spec);
    if (!tok) {
        fprintf(stderr, "postshare tokenize: error: %s\n", ps_err_msg());
        free(files);
        return 1;
    }
    double t_open = ps_now() - t0, t_enc = 0, cpu = 0;
    size_t bytes = 0, tokens = 0;
    int status = 0;
    for (int f = 0; f < nfiles && !status; f++) {
        size_t len;
        char *text = strcmp(files[f], "-") ? ps_read_file(files[f], &len) : NULL;
        if (!strcmp(files[f], "-")) {
            size_t cap = 1 << 16;
            text = xmalloc(cap);
            len = 0;
            size_t got;
            while ((got = fread(text + len, 1, cap - len, stdin)) > 0)
                if ((len += got) == cap) text = xrealloc(text, cap *= 2);
        }
        if (!text) {
            fprintf(stderr, "postshare tokenize: error: %s\n", ps_err_msg());
            status = 1;
            break;
        }
        bytes += len;
        for (size_t a = 0; a <= len;) {
            const char *nl = lines ? memchr(text + a, '\n', len - a) : NULL;
            size_t e = nl ? (size_t)(nl - text) : len;
            if (lines && !nl && a == len && a > 0) break;  // no empty line after a final '\n'
            size_t n;
            double t1 = ps_now();
            clock_t c1 = clock();
            int *ids = tok_encode(tok, text + a, e - a, bos, &n);
            cpu += (double)(clock() - c1) / CLOCKS_PER_SEC;
            t_enc += ps_now() - t1;
            tokens += n;
            if (!quiet) print_ids(ids, n, stdout);
            free(ids);
            a = e + 1;
        }
        free(text);
    }
    if (!status)
        fprintf(stderr,
                "tokenize: %s\ntokenize: %zu bytes -> %zu tokens in %.3f s (%.0f tokens/s, %.1f "
                "MB/s; CPU %.3f s, %.0f tokens/CPU-s; opening took %.3f s)\n",
                tok->desc, bytes, tokens, t_enc, (double)tokens / (t_enc > 0 ? t_enc : 1e-9),
                (double)bytes / 1e6 / (t_enc > 0 ? t_enc : 1e-9), cpu,
                (double)tokens / (cpu > 0 ? cpu : 1e-9), t_open);
    tok_free(tok);
    free(files);
    return status;
}
