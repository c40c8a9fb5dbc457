// sharecmd.c: the DirectShare commands (docs/sharing.md).
//   postshare match MODEL [--match F] [--ratio R] -o PLAN.json: match every head
//     against the heads of earlier layers, choose the plan, write PLAN.json, a
//     text summary (PLAN.summary.txt) and a heat map (PLAN.png through gnuplot;
//     PLAN.heatmap.dat, PLAN.chosen.dat and PLAN.gp are its data and script).
//   postshare share MODEL --plan PLAN.json -o OUT [--materialize]: apply a plan
//     to the model's weights and write the compact shared model (or, with
//     --materialize, an ordinary HF folder), reporting parameters and bytes.
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE  // madvise
#include "sharecmd.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "align.h"
#include "calib.h"
#include "cliargs.h"
#include "common.h"
#include "eval.h"
#include "hf_io.h"
#include "loader.h"
#include "modelsrc.h"
#include "tokenizer.h"
#include "model.h"
#include "plot.h"
#include "share.h"
#include "train.h"

// PLAN.json -> PLAN + suffix (the files match writes beside the plan).
static char *beside(const char *plan_path, const char *suffix) {
    size_t n = strlen(plan_path);
    if (n > 5 && !strcmp(plan_path + n - 5, ".json")) n -= 5;
    char *p = xmalloc(n + strlen(suffix) + 1);
    memcpy(p, plan_path, n);
    strcpy(p + n, suffix);
    return p;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

// ---------------------------------------------------------------------------
// summary

// Histogram of layer distances (target layer - source layer) as "1: n, 2: m | mean d".
static void print_distances(FILE *f, const int *dist, int n, int L) {
    int *h = xcalloc((size_t)L, sizeof(int));
    double sum = 0;
    for (int i = 0; i < n; i++) h[dist[i]]++, sum += dist[i];
    const char *sep = "";
    for (int d = 1; d < L; d++)
        if (h[d]) fprintf(f, "%s%d: %d", sep, d, h[d]), sep = ", ";
    fprintf(f, " | mean %.2f\n", n ? sum / n : 0.0);
    free(h);
}

static void write_summary(FILE *f, const char *model, const LlamaConfig *c, const SharePlan *p,
                          const ShareSim *s, double secs, ShareSelect sel, const char *fallback) {
    int L = c->n_layers, U = c->n_kv_heads, N = L * U, G = c->n_heads / U;
    char a[32], b[32];
    fprintf(f, "model: %s | %d layers, %d query heads, %d kv heads, head dim %d, dim %d\n", model,
            L, c->n_heads, U, cfg_head_dim(c), c->dim);
    if (G == 1)
        fprintf(f, "unit: one head (MHA): %d units\n", N);
    else
        fprintf(f, "unit: a KV group (%d query heads + their K/V head): %d units\n", G, N);
    fprintf(f, "match: %s, each unit of layers 1..%d against all %s of earlier layers (%.2f s)\n",
            share_match_name(p->match), L - 1, G == 1 ? "heads" : "groups", secs);
    fprintf(
        f,
        "plan: ratio %g -> %d of %d units replaced (layer 0 is never replaced); selection %s%s\n",
        p->ratio, p->n, N, share_select_name(sel),
        sel == SELECT_RANDOM  ? " (random pairs: a baseline)"
        : sel == SELECT_PRUNE ? " (the units of lowest calibrated output energy: for share "
                                "--combine prune)"
                              : "");
    int nfb = 0;
    for (int i = 0; fallback && i < N; i++) nfb += fallback[i] != 0;
    if (nfb)
        fprintf(f,
                "fallbacks: %d pairs (marked * below) come from the fallback: every free unit "
                "was a source, so a source was replaced and the units it served moved on\n",
                nfb);

    // best-match similarity of every unit of layers >= 1
    int nb = N - U;
    float *bs = xmalloc(sizeof(float) * (size_t)(nb > 0 ? nb : 1));
    // chosen[i]: 1 replaced, 2 a source; top: the unreplaced unit with the highest best-match
    int *chosen = xcalloc((size_t)N, sizeof(int)), top = -1;
    for (int k = 0; k < p->n; k++) {
        chosen[p->e[k].layer * U + p->e[k].unit] = 1;
        chosen[p->e[k].src_layer * U + p->e[k].src_unit] = 2;
    }
    for (int i = U; i < N; i++) {
        bs[i - U] = s->sim[(size_t)i * N + s->best[i]];
        if (chosen[i] != 1 && (top < 0 || bs[i - U] > bs[top - U])) top = i;
    }
    if (nb > 0) {
        qsort(bs, (size_t)nb, sizeof(float), cmp_float);
        fprintf(f, "best-match similarity over layers 1..%d: min %.4f, median %.4f, max %.4f\n",
                L - 1, bs[0], bs[nb / 2], bs[nb - 1]);
        if (p->match < MATCH_CALIB && bs[nb - 1] < 0.1f)
            fprintf(f,
                    "NOTE: every similarity is near zero (max %.4f < 0.1): no unit resembles "
                    "an earlier one under '%s', so the chosen pairs are little better than "
                    "random ones\n",
                    bs[nb - 1], share_match_name(p->match));
    }
    if (p->n > 0) {
        float lo = p->e[0].sim;
        for (int k = 1; k < p->n; k++) lo = p->e[k].sim < lo ? p->e[k].sim : lo;
        fprintf(f, "similarity threshold: every chosen pair has similarity >= %.4f", lo);
        if (top >= 0)
            fprintf(f, "; the highest best-match left unreplaced is %.4f (%s%s)",
                    s->sim[(size_t)top * N + s->best[top]], share_unit_name(c, top / U, top % U, a),
                    chosen[top] == 2 ? ", kept as a source" : "");
        fprintf(f, "\n");
    }
    fprintf(f, "chosen per layer:");
    for (int l = 0; l < L; l++) {
        int n = 0;
        for (int u = 0; u < U; u++) n += chosen[l * U + u] == 1;
        fprintf(f, " L%d %d/%d", l, n, U);
    }
    fprintf(f, "\n");
    int *dist = xmalloc(sizeof(int) * (size_t)(N > 0 ? N : 1));
    if (p->n > 0) {
        for (int k = 0; k < p->n; k++) dist[k] = p->e[k].layer - p->e[k].src_layer;
        fprintf(f, "layer distance of the chosen pairs (layer - source layer): ");
        print_distances(f, dist, p->n, L);
    }
    for (int i = U; i < N; i++) dist[i - U] = i / U - s->best[i] / U;
    if (nb > 0) {
        fprintf(f, "layer distance of every unit's best match: ");
        print_distances(f, dist, nb, L);
    }
    ShareCounts k = share_counts(p);
    fprintf(f,
            "parameters: %zu -> %zu (-%.2f%%); attention %zu -> %zu (-%.2f%%); fp32 bytes %zu -> "
            "%zu\n",
            k.params_before, k.params_after,
            100.0 * (double)(k.params_before - k.params_after) / (double)k.params_before,
            k.attn_before, k.attn_after,
            100.0 * (double)(k.attn_before - k.attn_after) / (double)k.attn_before,
            4 * k.params_before, 4 * k.params_after);
    // the pairs, most similar first (the plan lists them by layer)
    int *ord = xmalloc(sizeof(int) * (size_t)(p->n ? p->n : 1));
    for (int i = 0; i < p->n; i++) ord[i] = i;
    for (int i = 1; i < p->n; i++)  // insertion sort: stable, small n
        for (int j = i; j > 0 && p->e[ord[j]].sim > p->e[ord[j - 1]].sim; j--) {
            int t = ord[j];
            ord[j] = ord[j - 1];
            ord[j - 1] = t;
        }
    int show = p->n < 12 ? p->n : 12;
    if (show) fprintf(f, "pairs (replaced <- source: similarity), most similar first:\n");
    for (int i = 0; i < show; i++) {
        const ShareEntry *e = &p->e[ord[i]];
        fprintf(f, "  %s <- %s: %.4f%s\n", share_unit_name(c, e->layer, e->unit, a),
                share_unit_name(c, e->src_layer, e->src_unit, b), e->sim,
                fallback && fallback[e->layer * U + e->unit] ? " *" : "");
    }
    if (show < p->n) fprintf(f, "  ... %d more in the plan\n", p->n - show);
    free(ord);
    free(dist);
    free(chosen);
    free(bs);
}

// ---------------------------------------------------------------------------
// heat map

// A path inside a gnuplot single-quoted string ('' stands for ').
static void gp_quoted(FILE *f, const char *s) {
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'') fputc('\'', f);
        fputc(*s, f);
    }
    fputc('\'', f);
}

// PLAN.heatmap.dat: best-match similarity, one row per layer, one column per
// unit ('?' in layer 0, which has no earlier layer); PLAN.chosen.dat: each
// replaced unit and its source; PLAN.gp: the gnuplot script that draws PLAN.png
// from them (its messages go to PLAN.gp.log).
static void write_heatmap(const char *plan_path, const LlamaConfig *c, const SharePlan *p,
                          const ShareSim *s, const char *fallback) {
    int L = c->n_layers, U = c->n_kv_heads, N = L * U;
    char *dat = beside(plan_path, ".heatmap.dat"), *cho = beside(plan_path, ".chosen.dat");
    char *gp = beside(plan_path, ".gp"), *png = beside(plan_path, ".png");
    char *log = beside(plan_path, ".gp.log");
    // A replaced unit shows the similarity of the pair actually chosen, any
    // other unit its best match.
    int *src = xmalloc(sizeof(int) * (size_t)N);
    share_plan_src(p, src);
    FILE *f = xfopen(dat, "w");
    for (int l = 0; l < L; l++) {
        for (int u = 0; u < U; u++) {
            int i = l * U + u, j = src[i] != i ? src[i] : s->best[i];
            if (l == 0)
                fprintf(f, "%s?", u ? " " : "");
            else
                fprintf(f, "%s%.6f", u ? " " : "", s->sim[(size_t)i * N + j]);
        }
        fprintf(f, "\n");
    }
    free(src);
    CHECK(fclose(f) == 0, "writing %s failed", dat);
    f = xfopen(cho, "w");
    fprintf(f, "# unit layer source_layer source_unit similarity fallback\n");
    int nfb = 0;
    for (int k = 0; k < p->n; k++) {
        int fb = fallback && fallback[p->e[k].layer * U + p->e[k].unit];
        nfb += fb;
        fprintf(f, "%d %d %d %d %.6f %d\n", p->e[k].unit, p->e[k].layer, p->e[k].src_layer,
                p->e[k].src_unit, p->e[k].sim, fb);
    }
    CHECK(fclose(f) == 0, "writing %s failed", cho);
    f = xfopen(gp, "w");
    int w = 360 + 24 * U, h = 200 + 22 * L;
    fprintf(f, "set terminal png size %d,%d\nset output ", w < 640 ? 640 : w, h < 420 ? 420 : h);
    gp_quoted(f, png);
    const char *unit = U == c->n_heads ? "head" : "KV group";
    fprintf(f,
            "\nset title \"similarity (%s) per %s: chosen pair if replaced, else best match\\n"
            "%d of %d replaced (ratio %g)%s\"\n",
            share_match_name(p->match), unit, p->n, N, p->ratio,
            nfb ? ", fallback pairs boxed" : "");
    fprintf(f,
            "set xlabel '%s'\nset ylabel 'layer'\nset cblabel 'similarity (fixed scale 0..1)'\n"
            "set cbrange [0:1]\n"
            "set xrange [-0.5:%d.5]\nset yrange [-0.5:%d.5]\nset xtics 0,%d\nset ytics 0,%d\n"
            "set palette rgbformulae 33,13,10\nset datafile missing '?'\n"
            "set key outside bottom center horizontal\nplot ",
            unit, U - 1, L - 1, U > 16 ? 4 : 1, L > 16 ? 4 : 1);
    gp_quoted(f, dat);
    fprintf(f, " matrix with image notitle, ");
    gp_quoted(f, cho);
    fprintf(f, " using 1:2 with points pt 2 ps 1.5 lw 2 lc rgb 'black' title 'replaced', ");
    gp_quoted(f, cho);
    fprintf(f, " using 4:3 with points pt 6 ps 1.5 lw 2 lc rgb 'black' title 'source'");
    if (nfb) {
        fprintf(f, ", ");
        gp_quoted(f, cho);
        fprintf(f,
                " using 1:($6 > 0 ? $2 : 1/0) with points pt 4 ps 2.5 lw 2 lc rgb 'grey50' "
                "title 'fallback'");
    }
    fprintf(f, "\n");
    CHECK(fclose(f) == 0, "writing %s failed", gp);
    int r = plot_gnuplot(NULL, gp, log);
    if (r == 0)
        printf("match: heat map %s (data %s, %s; script %s)\n", png, dat, cho, gp);
    else if (r == 1)
        printf(
            "match: gnuplot is not installed (apt-get install gnuplot-nox): wrote the heat "
            "map's data %s and %s and its script %s, but no %s\n",
            dat, cho, gp, png);
    else
        printf("match: gnuplot failed on %s (see %s): wrote the data %s and %s, but no %s\n", gp,
               log, dat, cho, png);
    free(dat);
    free(cho);
    free(gp);
    free(png);
    free(log);
}

// ---------------------------------------------------------------------------
// match

// Drop the pages of [p, p + bytes) from this process (file-backed: read again
// if touched), so hashing every attention tensor does not keep them resident.
static void release_pages(const void *p, size_t bytes) {
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE), a = ((uintptr_t)p + pg - 1) / pg * pg,
              b = ((uintptr_t)p + bytes) / pg * pg;
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

// For the cosine match of an HF folder: its attention tensors mapped in place
// (F32 used as they are, BF16/F16 converted chunk by chunk), never the whole
// model in fp32. 0, or -1 when MODEL is not such a folder (then it is loaded).
static int map_views(const char *spec, HfMapped *m, ShareLayerView **out, StDtype *dtype) {
    const char *dir = !strncmp(spec, "hf:", 3) ? spec + 3 : spec;
    struct stat st;
    if ((strncmp(spec, "hf:", 3) && (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))) ||
        hf_map(dir, m) != 0)
        return -1;
    const LlamaConfig *c = &m->cfg;
    int hd = cfg_head_dim(c), L = c->n_layers;
    int64_t rows[4] = {(int64_t)c->n_heads * hd, (int64_t)c->n_kv_heads * hd,
                       (int64_t)c->n_kv_heads * hd, c->dim};
    int64_t cols[4] = {c->dim, c->dim, c->dim, (int64_t)c->n_heads * hd};
    ShareLayerView *v = xcalloc((size_t)L, sizeof *v);
    for (int l = 0; l < L; l++)
        for (int k = 0; k < 4; k++) {
            char name[96];
            snprintf(name, sizeof name, "model.layers.%d.self_attn.%c_proj.weight", l, "qkvo"[k]);
            const StFile *f;
            const StTensor *t = hf_mapped_find(m, name, &f);
            const void *p = t ? f->data + t->begin : NULL;
            if (!t || t->ndim != 2 || t->shape[0] != rows[k] || t->shape[1] != cols[k] ||
                !(t->dtype == ST_BF16 || t->dtype == ST_F16 ||
                  (t->dtype == ST_F32 && (uintptr_t)p % 4 == 0))) {
                free(v);
                hf_unmap(m);
                return -1;  // the full loader gives the precise message
            }
            *dtype = t->dtype;
            const float *fp = t->dtype == ST_F32 ? p : NULL;
            if (k == 0) v[l].wq = fp;
            if (k == 1) v[l].wk = fp;
            if (k == 2) v[l].wv = fp;
            if (k == 3) v[l].wo = fp;
            if (!fp) v[l].raw[k] = p, v[l].raw_dtype[k] = t->dtype;
        }
    *out = v;
    return 0;
}

static void match_usage(FILE *f) {
    fprintf(f,
            "usage: postshare match MODEL -o PLAN.json [options]\n"
            "  MODEL              hf:DIR, llama2c:FILE.bin, gguf:FILE, or a path\n"
            "  -o PLAN.json       the plan to write (required); beside it: PLAN.summary.txt,\n"
            "                     PLAN.png (heat map) and its data PLAN.heatmap.dat,\n"
            "                     PLAN.chosen.dat, PLAN.gp\n"
            "  --match F          how a pair is scored: cosine of qk (default), q, k, v, qkv;\n"
            "                     circuit (QK and OV circuits, symmetry-aware); calib (the\n"
            "                     output error on calibration data: needs --calib);\n"
            "                     importance (that error times the target's measured head\n"
            "                     importance: needs --calib from calibrate --importance-tokens);\n"
            "                     measured (that error times the loss increase measured with\n"
            "                     the target sharing its calib-best source: needs --calib from\n"
            "                     calibrate --damage-tokens)\n"
            "  --calib FILE       calibration Grams from postshare calibrate\n"
            "  --select S         greedy (default: the selection rule), random (a baseline,\n"
            "                     --seed), prune (the units of lowest calibrated output energy,\n"
            "                     for share --combine prune: needs --calib)\n"
            "  --seed N           seed of --select random (default 1)\n"
            "  --ratio R          fraction of all heads (KV groups under GQA) to replace,\n"
            "                     in [0, 1) (default 0.3)\n"
            "  --no-plot          skip the heat map\n"
            "  --no-map           load the whole model even where the cosine match of an HF\n"
            "                     folder would read its attention tensors in place\n"
            "  --threads N        CPU threads (default: all)\n");
}

int matchcmd_main(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *match = "qk", *calib = NULL, *select = "greedy";
    double ratio = 0.3;
    int threads = 0, plot = 1, nomap = 0;
    uint64_t seed = 1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int has_next = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            match_usage(stdout);
            return 0;
        } else if (!strcmp(a, "-o") && has_next) {
            out = argv[++i];
        } else if (!strcmp(a, "--match") && has_next) {
            match = argv[++i];
        } else if (!strcmp(a, "--calib") && has_next) {
            calib = argv[++i];
        } else if (!strcmp(a, "--select") && has_next) {
            select = argv[++i];
        } else if (!strcmp(a, "--seed") && has_next) {
            seed = (uint64_t)cli_int("match", a, argv[++i], 0, 0x7fffffffffffffffL);
        } else if (!strcmp(a, "--ratio") && has_next) {
            ratio = cli_float("match", a, argv[++i], 0.0, 0.999999);
        } else if (!strcmp(a, "--threads") && has_next) {
            threads = (int)cli_int("match", a, argv[++i], 0, 4096);
        } else if (!strcmp(a, "--no-plot")) {
            plot = 0;
        } else if (!strcmp(a, "--no-map")) {
            nomap = 1;
        } else {
            cli_positional("match", a, &model, "MODEL");
        }
    }
    if (!model || !out) {
        match_usage(stderr);
        ps_die("match: MODEL and -o PLAN.json are required");
    }
    ShareMakeOpts o = {.ratio = ratio, .seed = seed, .verbose = 1};
    if (share_match_parse(match, &o.fn) != 0) ps_die("match: --match: %s", ps_err_msg());
    if (share_select_parse(select, &o.select) != 0) ps_die("match: --select: %s", ps_err_msg());
    train_set_threads(threads);
    HostWeights w = {0};
    HfMapped hm;
    ShareLayerView *mv = NULL;
    StDtype mdt = ST_F32;
    int mapped = !nomap && o.fn <= MATCH_QKV && o.select != SELECT_PRUNE && !calib &&
                 map_views(model, &hm, &mv, &mdt) == 0;
    if (!mapped && model_load_any(model, &w) != 0) ps_die("%s", ps_err_msg());
    const LlamaConfig *cfg = mapped ? &hm.cfg : &w.t.cfg;
    CalibGrams g;
    if (calib) {
        if (calib_read(calib, cfg, &g) != 0) ps_die("match: --calib: %s", ps_err_msg());
        o.grams = &g;
    }
    double t0 = ps_now();
    SharePlan plan;
    ShareSim sim;
    int N = cfg->n_layers * cfg->n_kv_heads;
    char *fallback = xcalloc((size_t)N, 1);
    if (mapped) {
        printf("match: reading the attention tensors of %s in place (%s, mapped; no full load)\n",
               model, st_dtype_name(mdt));
        char fp[40];
        share_fingerprint_views(cfg, mv, fp, release_pages);
        share_match(cfg, mv, o.fn, 1, &sim);
        if (share_plan_select(&sim, cfg, fp, &o, NULL, &plan, fallback) != 0)
            ps_die("match: %s", ps_err_msg());
    } else if (share_plan_make_opts(&w, &o, &plan, &sim, fallback) != 0) {
        ps_die("match: %s", ps_err_msg());
    }
    double secs = ps_now() - t0;
    char *dir = xstrdup(out), *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = 0;
        if (ps_mkdirs(dir) != 0) ps_die("match: %s", ps_err_msg());
    }
    free(dir);
    if (share_plan_write(out, &plan) != 0) ps_die("match: %s", ps_err_msg());
    write_summary(stdout, model, cfg, &plan, &sim, secs, o.select, fallback);
    char *sum_path = beside(out, ".summary.txt");
    FILE *f = xfopen(sum_path, "w");
    write_summary(f, model, cfg, &plan, &sim, secs, o.select, fallback);
    CHECK(fclose(f) == 0, "writing %s failed", sum_path);
    printf("match: wrote %s and %s\n", out, sum_path);
    free(sum_path);
    if (plot) write_heatmap(out, cfg, &plan, &sim, fallback);
    free(fallback);
    if (calib) calib_free(&g);
    share_sim_free(&sim);
    share_plan_free(&plan);
    if (mapped) {
        free(mv);
        hf_unmap(&hm);
    }
    host_weights_free(&w);
    return 0;
}

// ---------------------------------------------------------------------------
// calibrate

static void calib_usage(FILE *f) {
    fprintf(f,
            "usage: postshare calibrate MODEL --data GLOB -o FILE [options]\n"
            "  MODEL              hf:DIR, llama2c:FILE.bin, or a path\n"
            "  --data GLOB        token shards to run the model on (required)\n"
            "  -o FILE            the calibration Grams to write (required)\n"
            "  --tokens N         tokens to use (default 4096)\n"
            "  --importance-tokens N  also measure head importance (for match --match\n"
            "                     importance): the loss increase when each unit of layers >= 1\n"
            "                     is removed, on the first N of these tokens, one forward pass\n"
            "                     per unit (default 0: none)\n"
            "  --damage-tokens N  also measure the sharing damage (for match --match\n"
            "                     measured): the loss increase when each unit of layers >= 1\n"
            "                     takes the slices of its calib-best source, on the first N\n"
            "                     tokens, one forward pass per unit (default 0: none)\n"
            "  --seq-len T        tokens per sequence (default: min(256, max_seq_len))\n"
            "  --threads N        CPU threads (default: all)\n");
}

// One line for a per-unit loss sweep of calibrate (importance, damage): its range.
static void report_sweep(const LlamaConfig *c, const char *what, const double *v, long tokens,
                         double base, double secs) {
    int L = c->n_layers, U = c->n_kv_heads;
    double lo = INFINITY, hi = -INFINITY;
    for (int i = U; i < L * U; i++) lo = fmin(lo, v[i]), hi = fmax(hi, v[i]);
    printf(
        "calibrate: %s of %d units on %ld tokens (loss %.4f): loss increase %.5f .. %.5f, in "
        "%.1f s\n",
        what, (L - 1) * U, tokens, base, lo, hi, secs);
}

int calibcmd_main(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *data = NULL;
    long tokens = 4096, imp_tokens = 0, dmg_tokens = 0;
    int threads = 0, T = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int has_next = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            calib_usage(stdout);
            return 0;
        } else if (!strcmp(a, "-o") && has_next) {
            out = argv[++i];
        } else if (!strcmp(a, "--data") && has_next) {
            data = argv[++i];
        } else if (!strcmp(a, "--tokens") && has_next) {
            tokens = cli_int("calibrate", a, argv[++i], 1, 1L << 40);
        } else if (!strcmp(a, "--importance-tokens") && has_next) {
            imp_tokens = cli_int("calibrate", a, argv[++i], 0, 1L << 40);
        } else if (!strcmp(a, "--damage-tokens") && has_next) {
            dmg_tokens = cli_int("calibrate", a, argv[++i], 0, 1L << 40);
        } else if (!strcmp(a, "--seq-len") && has_next) {
            T = (int)cli_int("calibrate", a, argv[++i], 1, 1 << 20);
        } else if (!strcmp(a, "--threads") && has_next) {
            threads = (int)cli_int("calibrate", a, argv[++i], 0, 4096);
        } else {
            cli_positional("calibrate", a, &model, "MODEL");
        }
    }
    if (!model || !out || !data) {
        calib_usage(stderr);
        ps_die("calibrate: MODEL, --data and -o FILE are required");
    }
    train_set_threads(threads);
    HostWeights w;
    if (model_load_any(model, &w) != 0) ps_die("%s", ps_err_msg());
    const LlamaConfig *c = &w.t.cfg;
    if (T == 0) T = c->max_seq_len < 256 ? c->max_seq_len : 256;
    if (T > c->max_seq_len)
        ps_die("calibrate: --seq-len %d is longer than the model's max_seq_len %d", T,
               c->max_seq_len);
    Loader *ld = loader_open(data, T, c->vocab_size, 0, 0);
    if (!ld) ps_die("calibrate: --data: %s", ps_err_msg());
    double t0 = ps_now();
    CalibGrams g;
    if (calib_collect(&w, ld, tokens, &g) != 0) ps_die("calibrate: %s", ps_err_msg());
    double t1 = ps_now();
    if (imp_tokens > 0) {
        if (calib_importance(&w, ld, imp_tokens, 1, &g) != 0) ps_die("calibrate: %s", ps_err_msg());
        report_sweep(c, "head importance", g.imp, g.imp_tokens, g.imp_base, ps_now() - t1);
    }
    if (dmg_tokens > 0) {
        double t2 = ps_now();
        if (calib_damage(&w, ld, dmg_tokens, 1, &g) != 0) ps_die("calibrate: %s", ps_err_msg());
        report_sweep(c, "measured sharing damage", g.dmg, g.dmg_tokens, g.dmg_base, ps_now() - t2);
    }
    if (calib_write(out, &g) != 0) ps_die("calibrate: %s", ps_err_msg());
    printf(
        "calibrate: %s on %ld tokens of %s (%d x %d): layer input and unit output Grams in "
        "%.1f s -> %s\n",
        model, g.tokens, data, (int)(g.tokens / T), T, t1 - t0, out);
    calib_free(&g);
    loader_close(ld);
    host_weights_free(&w);
    return 0;
}

// ---------------------------------------------------------------------------
// share

// Bytes of the model files behind a spec: a folder's *.safetensors and *.json,
// or the one file.
static long long spec_file_bytes(const char *spec) {
    const char *pre[] = {"hf:", "llama2c:", "shared:", "ckpt:"};
    for (int i = 0; i < 4; i++)
        if (!strncmp(spec, pre[i], strlen(pre[i]))) spec += strlen(pre[i]);
    struct stat st;
    if (stat(spec, &st) != 0) return -1;
    if (!S_ISDIR(st.st_mode)) return (long long)st.st_size;
    DIR *d = opendir(spec);
    if (!d) return -1;
    long long sum = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        int ours = (n > 12 && !strcmp(e->d_name + n - 12, ".safetensors")) ||
                   (n > 5 && !strcmp(e->d_name + n - 5, ".json"));
        char *p = ps_path_join(spec, e->d_name);
        if (ours && stat(p, &st) == 0 && S_ISREG(st.st_mode)) sum += (long long)st.st_size;
        free(p);
    }
    closedir(d);
    return sum;
}

// Size of the model.safetensors hf_save writes for w in dtype dt.
static size_t safetensors_bytes(const HostWeights *w, StDtype dt) {
    StWriteTensor *wt = xcalloc((size_t)w->t.n, sizeof *wt);
    int n = hf_tensor_list(w, dt, wt);
    size_t b = st_write_size(n, wt);
    free(wt);
    return b;
}

static size_t attn_params(const ParamTable *t) {
    size_t n = 0;
    for (int i = 0; i < t->n; i++)
        if (t->e[i].kind >= P_WQ && t->e[i].kind <= P_WO) n += t->e[i].numel;
    return n;
}

static void report_row(const char *name, const HostWeights *w, StDtype dt, const char *note) {
    printf("%-13s %13zu %13zu %16zu %16zu%s%s\n", name, w->t.total, attn_params(&w->t),
           safetensors_bytes(w, dt), model_weight_bytes(&w->t, sizeof(float)), *note ? "   " : "",
           note);
}

static void share_usage(FILE *f) {
    fprintf(f,
            "usage: postshare share MODEL --plan PLAN.json -o OUT [options]\n"
            "  MODEL              hf:DIR, llama2c:FILE.bin, or a path (the model the plan is for)\n"
            "  --plan PLAN.json   a plan from postshare match (required)\n"
            "  -o OUT             output folder (required): a compact shared model\n"
            "                     (model.safetensors with each shared slice once, plan.json,\n"
            "                     config.json); load it by its path or as shared:OUT\n"
            "  --materialize      write an ordinary HF folder instead (transformers loads it)\n"
            "  --force            apply the plan even if its fingerprint does not match MODEL\n"
            "  --dtype D          float32 (default) or bfloat16\n"
            "  --align            first move each target to the function-preserving transform\n"
            "                     of itself closest to its source (changes no output)\n"
            "  --combine C        copy (default: targets take the source's slices), merge\n"
            "                     (source and targets share the slice that serves them all\n"
            "                     best on calibration data: needs --calib), prune (targets\n"
            "                     removed: their slices zeroed; writes a plain HF folder)\n"
            "  --calib FILE       calibration Grams from postshare calibrate\n"
            "  --tokenizer SPEC   the tokenizer written beside the model (default: MODEL's own:\n"
            "                     an HF folder's files, a GGUF's metadata)\n");
}

int sharecmd_main(int argc, char **argv) {
    const char *model = NULL, *plan_path = NULL, *out = NULL, *dtype = "float32";
    const char *combine = "copy", *calib = NULL, *tok = NULL;
    int materialize = 0, force = 0, align = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int has_next = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            share_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--plan") && has_next) {
            plan_path = argv[++i];
        } else if (!strcmp(a, "-o") && has_next) {
            out = argv[++i];
        } else if (!strcmp(a, "--dtype") && has_next) {
            dtype = argv[++i];
        } else if (!strcmp(a, "--materialize")) {
            materialize = 1;
        } else if (!strcmp(a, "--tokenizer") && has_next) {
            tok = argv[++i];
        } else if (!strcmp(a, "--force")) {
            force = 1;
        } else if (!strcmp(a, "--align")) {
            align = 1;
        } else if (!strcmp(a, "--combine") && has_next) {
            combine = argv[++i];
        } else if (!strcmp(a, "--calib") && has_next) {
            calib = argv[++i];
        } else {
            cli_positional("share", a, &model, "MODEL");
        }
    }
    if (!model || !plan_path || !out) {
        share_usage(stderr);
        ps_die("share: MODEL, --plan and -o are required");
    }
    StDtype dt;
    if (!strcmp(dtype, "float32") || !strcmp(dtype, "f32") || !strcmp(dtype, "fp32"))
        dt = ST_F32;
    else if (!strcmp(dtype, "bfloat16") || !strcmp(dtype, "bf16"))
        dt = ST_BF16;
    else
        ps_die("share: --dtype must be float32 or bfloat16, got '%s'", dtype);
    int merge = !strcmp(combine, "merge"), prune = !strcmp(combine, "prune");
    if (!merge && !prune && strcmp(combine, "copy"))
        ps_die("share: --combine must be copy, merge or prune, got '%s'", combine);
    if (merge && !calib) ps_die("share: --combine merge needs --calib FILE (postshare calibrate)");

    // Everything is checked before OUT is touched.
    SharePlan plan;
    if (share_plan_read(plan_path, &plan) != 0) ps_die("share: %s", ps_err_msg());
    HostWeights full;
    HfExport x;
    if (model_export_info(model, tok, &x) != 0) ps_die("share: %s", ps_err_msg());
    if (model_load_any(model, &full) != 0) ps_die("%s", ps_err_msg());
    if (tok && tok_check_vocab(tok, full.t.cfg.vocab_size) != 0)
        ps_die("share: --tokenizer: %s", ps_err_msg());
    char fp[40];
    share_fingerprint(&full.t, full.params, fp);
    if (share_plan_check(&plan, &full.t.cfg, fp, force, plan_path) != 0)
        ps_die("share: %s", ps_err_msg());
    if (strcmp(fp, plan.fingerprint))
        fprintf(stderr,
                "share: warning: --force: %s was made for weights %s, %s has %s; applying it "
                "anyway\n",
                plan_path, plan.fingerprint, model, fp);
    CalibGrams g;
    if (calib && calib_read(calib, &full.t.cfg, &g) != 0)
        ps_die("share: --calib: %s", ps_err_msg());
    if (align) {
        double before, after;
        align_plan(&full, &plan, calib ? &g : NULL, &before, &after);
        printf(
            "share: aligned %d targets to their sources: mean |target - source| / |source| "
            "%.4f -> %.4f\n",
            plan.n, before, after);
    }
    if (merge) {
        calib_merge(&full, &plan, &g);
        printf("share: merged each source with its targets on %ld calibration tokens\n", g.tokens);
    }
    if (calib) calib_free(&g);
    if (prune) {
        // The targets are removed: their Wq, Wk, Wv rows and Wo columns become 0.
        const LlamaConfig *c = &full.t.cfg;
        int hd = cfg_head_dim(c), G = c->n_heads / c->n_kv_heads, C = c->dim, qd = c->n_heads * hd;
        for (int k = 0; k < plan.n; k++) {
            int l = plan.e[k].layer, u = plan.e[k].unit;
            const ParamKind rk[3] = {P_WQ, P_WK, P_WV};
            for (int j = 0; j < 3; j++) {
                size_t r = (size_t)(j == 0 ? G : 1) * hd * C;
                memset(full.params + param_layer(&full.t, l, rk[j])->offset + (size_t)u * r, 0,
                       sizeof(float) * r);
            }
            float *o = full.params + param_layer(&full.t, l, P_WO)->offset + (size_t)u * G * hd;
            for (int r = 0; r < C; r++)
                memset(o + (size_t)r * qd, 0, sizeof(float) * (size_t)G * hd);
        }
        if (hf_save_export(out, &full, dtype, &x) != 0) ps_die("share: %s", ps_err_msg());
        ShareCounts k = share_counts(&plan);
        printf(
            "share: pruned %d units of %s (plan %s): their slices are zero; parameters as if "
            "removed %zu -> %zu; saved %s (plain HF folder)\n",
            plan.n, model, plan_path, k.params_before, k.params_after, out);
        host_weights_free(&full);
        share_plan_free(&plan);
        return 0;
    }

    HostWeights compact, mat;
    share_compact(&full, &plan, &compact);
    share_materialize(&compact, &mat);
    const HostWeights *save = materialize ? &mat : &compact;
    if (hf_save_export(out, save, dtype, &x) != 0) ps_die("share: %s", ps_err_msg());

    char a[32], b[32];
    const LlamaConfig *c = &full.t.cfg;
    int U = c->n_kv_heads;
    printf(
        "share: %s with plan %s: %d of %d %s reuse another's Wq/Wk/Wv rows and Wo columns "
        "(match %s, ratio %g)\n",
        model, plan_path, plan.n, c->n_layers * U, U == c->n_heads ? "heads" : "KV groups",
        share_match_name(plan.match), plan.ratio);
    for (int k = 0; k < plan.n && k < 8; k++)
        printf("  %s <- %s (similarity %.4f)\n",
               share_unit_name(c, plan.e[k].layer, plan.e[k].unit, a),
               share_unit_name(c, plan.e[k].src_layer, plan.e[k].src_unit, b), plan.e[k].sim);
    if (plan.n > 8) printf("  ... %d more\n", plan.n - 8);
    printf("\n%-13s %13s %13s %16s %16s\n", "model", "parameters", "attention", "safetensors B",
           "resident B");
    report_row("original", &full, dt, "");
    report_row("compact", &compact, dt, "resident = weights + one layer's assembled Wq/Wk/Wv/Wo");
    report_row("materialized", &mat, dt, "");
    printf(
        "(safetensors B: bytes of model.safetensors in %s; resident B: fp32 weight memory when "
        "loaded)\n",
        dtype);
    long long in_bytes = spec_file_bytes(model), out_bytes = spec_file_bytes(out);
    printf("files on disk: %s %lld bytes; %s %lld bytes\n", model, in_bytes, out, out_bytes);
    printf("saved %s (%s)\n", out,
           materialize ? "ordinary HF folder, materialized"
                       : "compact shared model: model.safetensors + plan.json + config.json");
    host_weights_free(&mat);
    host_weights_free(&compact);
    host_weights_free(&full);
    share_plan_free(&plan);
    return 0;
}
