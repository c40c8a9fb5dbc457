// tasks.c: the task table and the readers of its data formats (see tasks.h and
// docs/tasks.md). Each built-in row states the lm-eval 0.4 task YAML it follows.
#include "tasks.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "common.h"
#include "jsonio.h"

// ---------------------------------------------------------------------------
// The table. prompt = prefix + (query without `strip`) + suffix; each choice is
// scored as delim + choice. See docs/tasks.md for how each matches lm-eval.
#define ACC_BOTH (TASK_M_ACC | TASK_M_ACC_NORM)
static const TaskDef BUILTIN[] = {
    {"piqa", TASK_FMT_PIQA, "piqa/valid.jsonl", "piqa/valid-labels.lst", "",
     "Question: ", "\nAnswer:", " ", ACC_BOTH, "lm_eval/tasks/piqa/piqa.yaml"},
    {"arc_easy", TASK_FMT_JSONL, "arc_easy/arc_easy.jsonl", "", "", "", "\nAnswer:", " ", ACC_BOTH,
     "lm_eval/tasks/arc/arc_easy.yaml"},
    {"openbookqa", TASK_FMT_JSONL, "openbookqa/openbook_qa.jsonl", "", "", "", "", " ", ACC_BOTH,
     "lm_eval/tasks/openbookqa/openbookqa.yaml"},
    {"boolq", TASK_FMT_JSONL, "boolq/boolq.jsonl", "", "Passage: ", "", "\nAnswer:", " ",
     TASK_M_ACC, "lm_eval/tasks/super_glue/boolq/default.yaml"},
    {"hellaswag", TASK_FMT_HELLASWAG, "hellaswag/hellaswag.jsonl", "", "", "", "", " ", ACC_BOTH,
     "lm_eval/tasks/hellaswag/hellaswag.yaml + utils.py"},
    {"lambada", TASK_FMT_LAMBADA, "lambada/lambada_test.jsonl", "", "", "", "", "",
     TASK_M_ACC | TASK_M_PPL, "lm_eval/tasks/lambada/lambada_openai.yaml"},
    {"mmlu", TASK_FMT_MMLU, "mmlu/mmlu.zip", "", "", "", "\nAnswer:", " ", TASK_M_ACC,
     "lm_eval/tasks/mmlu/default/_default_template_yaml"},
};
#define N_BUILTIN ((int)(sizeof(BUILTIN) / sizeof(BUILTIN[0])))

static TaskDef *g_user = NULL;
static int g_n_user = 0;

int task_count(void) {
    return N_BUILTIN + g_n_user;
}

const TaskDef *task_def_at(int i) {
    return i < N_BUILTIN ? &BUILTIN[i] : &g_user[i - N_BUILTIN];
}

const TaskDef *task_find(const char *name) {
    for (int i = 0; i < task_count(); i++)
        if (!strcmp(task_def_at(i)->name, name)) return task_def_at(i);
    char known[1024] = "";
    for (int i = 0; i < task_count(); i++) {
        size_t k = strlen(known);
        snprintf(known + k, sizeof known - k, "%s%s", i ? ", " : "", task_def_at(i)->name);
    }
    ps_err_set("unknown task '%s'; known tasks: %s", name, known);
    return NULL;
}

static int json_str_field(const cJSON *o, const char *key, char *dst, size_t cap, const char *path,
                          int i) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) return 0;
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= cap)
        return ps_err_set("%s: task %d: \"%s\" must be a string of at most %zu bytes", path, i, key,
                          cap - 1);
    strcpy(dst, v->valuestring);
    return 0;
}

int task_defs_load(const char *path) {
    size_t len = 0;
    char *text = ps_read_file(path, &len);
    if (!text) return -1;
    cJSON *root = ps_json_parse(text, len, path);
    free(text);
    if (!root) return -1;
    if (!cJSON_IsArray(root)) {
        cJSON_Delete(root);
        return ps_err_set("%s: expected a JSON list of task objects", path);
    }
    int rc = 0, i = 0, n0 = g_n_user;  // all or nothing: a bad row drops the file's rows
    const cJSON *o;
    cJSON_ArrayForEach(o, root) {
        TaskDef d = {0};
        d.fmt = TASK_FMT_JSONL;
        strcpy(d.delim, " ");
        d.metrics = ACC_BOTH;
        snprintf(d.source, sizeof d.source, "user task from %s", path);
        if (!cJSON_IsObject(o)) {
            rc = ps_err_set("%s: task %d is not an object", path, i);
            break;
        }
        char fmt[32] = "jsonl";
        if (json_str_field(o, "name", d.name, sizeof d.name, path, i) ||
            json_str_field(o, "file", d.file, sizeof d.file, path, i) ||
            json_str_field(o, "format", fmt, sizeof fmt, path, i) ||
            json_str_field(o, "prefix", d.prefix, sizeof d.prefix, path, i) ||
            json_str_field(o, "suffix", d.suffix, sizeof d.suffix, path, i) ||
            json_str_field(o, "strip", d.strip, sizeof d.strip, path, i) ||
            json_str_field(o, "delim", d.delim, sizeof d.delim, path, i)) {
            rc = -1;
            break;
        }
        if (!d.name[0] || !d.file[0]) {
            rc = ps_err_set("%s: task %d needs \"name\" and \"file\"", path, i);
            break;
        }
        if (strcmp(fmt, "jsonl")) {
            rc = ps_err_set("%s: task '%s': format '%s' is not supported (only \"jsonl\")", path,
                            d.name, fmt);
            break;
        }
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "metrics");
        if (m) {
            d.metrics = 0;
            const cJSON *e;
            cJSON_ArrayForEach(e, m) {
                if (cJSON_IsString(e) && !strcmp(e->valuestring, "acc"))
                    d.metrics |= TASK_M_ACC;
                else if (cJSON_IsString(e) && !strcmp(e->valuestring, "acc_norm"))
                    d.metrics |= TASK_M_ACC_NORM;
                else {
                    rc = ps_err_set("%s: task '%s': metrics must list \"acc\" and/or \"acc_norm\"",
                                    path, d.name);
                    break;
                }
            }
            if (!rc && !d.metrics)
                rc = ps_err_set("%s: task '%s': empty metrics list", path, d.name);
            if (rc) break;
        }
        for (int k = 0; k < task_count(); k++)
            if (!strcmp(task_def_at(k)->name, d.name)) {
                rc = ps_err_set("%s: task name '%s' is already defined", path, d.name);
                break;
            }
        if (rc) break;
        g_user = xrealloc(g_user, sizeof(TaskDef) * (size_t)(g_n_user + 1));
        g_user[g_n_user++] = d;
        i++;
    }
    cJSON_Delete(root);
    if (rc) g_n_user = n0;
    return rc;
}

void task_defs_reset(void) {
    free(g_user);
    g_user = NULL;
    g_n_user = 0;
}

// ---------------------------------------------------------------------------
// Small string helpers.
typedef struct {
    char *s;
    size_t n, cap;
} Str;

static void str_addn(Str *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->s = xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}
static void str_add(Str *b, const char *s) {
    str_addn(b, s, strlen(s));
}
static char *str_take(Str *b) {
    if (!b->s) str_addn(b, "", 0);
    return b->s;
}

// Characters (UTF-8 code points) of s: Python's len() of the decoded string.
static int utf8_chars(const char *s) {
    int n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

// Python's str.strip() for ASCII whitespace.
static char *strip_ws(const char *s) {
    while (*s && isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) n--;
    Str b = {0};
    str_addn(&b, s, n);
    return str_take(&b);
}

// Replace every non-overlapping occurrence of `from` (left to right), as str.replace.
static char *replace_all(const char *s, const char *from, const char *to) {
    Str b = {0};
    size_t fl = strlen(from);
    for (const char *p; (p = strstr(s, from)); s = p + fl) {
        str_addn(&b, s, (size_t)(p - s));
        str_add(&b, to);
    }
    str_add(&b, s);
    return str_take(&b);
}

// HellaSwag's preprocess (lm_eval/tasks/hellaswag/utils.py): strip, " [title]"
// -> ". ", drop every "[...]" (re.sub("\\[.*?\\]", "")), "  " -> " ".
static char *hellaswag_preprocess(const char *text) {
    char *a = strip_ws(text);
    char *b = replace_all(a, " [title]", ". ");
    Str c = {0};
    for (const char *p = b; *p;) {
        const char *close = *p == '[' ? strpbrk(p + 1, "]\n") : NULL;
        if (close && *close == ']') {  // '.' does not match a newline
            p = close + 1;
        } else {
            str_addn(&c, p, 1);
            p++;
        }
    }
    char *d = replace_all(str_take(&c), "  ", " ");
    free(a);
    free(b);
    free(c.s);
    return d;
}

// ---------------------------------------------------------------------------
// Documents.
static void doc_set(TaskDoc *d, char *context, int n, char **choices, const char *delim, int gold,
                    int index) {
    d->context = context;
    d->n_choices = n;
    d->conts = xmalloc(sizeof(char *) * (size_t)n);
    d->choice_len = xmalloc(sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++) {
        Str b = {0};
        str_add(&b, delim);
        str_add(&b, choices[i]);
        d->conts[i] = str_take(&b);
        d->choice_len[i] = utf8_chars(choices[i]);
    }
    d->gold = gold;
    d->group = 0;
    d->index = index;
}

static TaskDoc *push_doc(Task *t, int *cap) {
    if (t->n_docs == *cap) {
        *cap = *cap ? *cap * 2 : 256;
        t->docs = xrealloc(t->docs, sizeof(TaskDoc) * (size_t)*cap);
    }
    TaskDoc *d = &t->docs[t->n_docs++];
    memset(d, 0, sizeof *d);
    return d;
}

static char *make_prompt(const TaskDef *def, const char *query) {
    size_t sl = strlen(def->strip);
    if (sl && !strncmp(query, def->strip, sl)) query += sl;
    Str b = {0};
    str_add(&b, def->prefix);
    str_add(&b, query);
    str_add(&b, def->suffix);
    return str_take(&b);
}

static const char *jstr(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

// The choices of a JSON list of strings; -1 when not such a list.
static int jstr_list(const cJSON *a, char ***out) {
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) < 1) return -1;
    int n = cJSON_GetArraySize(a), i = 0;
    *out = xmalloc(sizeof(char *) * (size_t)n);
    const cJSON *e;
    cJSON_ArrayForEach(e, a) {
        if (!cJSON_IsString(e)) {
            free(*out);
            *out = NULL;  // the caller frees *out on every path
            return -1;
        }
        (*out)[i++] = e->valuestring;
    }
    return n;
}

// One JSONL line into a document; 0, or -1 with ps_err (file:line: problem).
static int jsonl_doc(const TaskDef *def, const cJSON *o, const char *path, int line,
                     const char *label_line, TaskDoc *d) {
    char **ch = NULL;
    int n = 0, gold = -1;
    char *ctx = NULL;
    const char *what = NULL;
    switch (def->fmt) {
        case TASK_FMT_JSONL: {
            const char *q = jstr(o, "query");
            const cJSON *g = cJSON_GetObjectItemCaseSensitive(o, "gold");
            n = jstr_list(cJSON_GetObjectItemCaseSensitive(o, "choices"), &ch);
            if (!q || n < 1 || !cJSON_IsNumber(g))
                what = "expected {\"query\": str, \"choices\": [str, ...], \"gold\": int}";
            else {
                gold = g->valueint;
                ctx = make_prompt(def, q);
            }
            break;
        }
        case TASK_FMT_PIQA: {
            const char *goal = jstr(o, "goal"), *s1 = jstr(o, "sol1"), *s2 = jstr(o, "sol2");
            if (!goal || !s1 || !s2) {
                what = "expected {\"goal\", \"sol1\", \"sol2\"} strings";
                break;
            }
            n = 2;
            ch = xmalloc(sizeof(char *) * 2);
            ch[0] = (char *)s1;
            ch[1] = (char *)s2;
            char *end = NULL;
            gold = label_line ? (int)strtol(label_line, &end, 10) : -1;
            if (!label_line || end == label_line) what = "no label (0 or 1) in the labels file";
            ctx = make_prompt(def, goal);
            break;
        }
        case TASK_FMT_HELLASWAG: {
            const char *a = jstr(o, "ctx_a"), *b = jstr(o, "ctx_b"),
                       *act = jstr(o, "activity_label");
            const cJSON *lab = cJSON_GetObjectItemCaseSensitive(o, "label");
            n = jstr_list(cJSON_GetObjectItemCaseSensitive(o, "endings"), &ch);
            if (!a || !b || !act || n < 1 || !(cJSON_IsNumber(lab) || cJSON_IsString(lab))) {
                what = "expected ctx_a, ctx_b, activity_label, endings and label";
                break;
            }
            gold = cJSON_IsNumber(lab) ? lab->valueint : atoi(lab->valuestring);
            // query = preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())
            Str q = {0};
            str_add(&q, act);
            str_add(&q, ": ");
            str_add(&q, a);
            str_add(&q, " ");
            size_t at = q.n;
            str_add(&q, b);
            for (size_t k = at; k < q.n; k++)  // capitalize(): first upper, the rest lower
                q.s[k] = (char)(k == at ? toupper((unsigned char)q.s[k])
                                        : tolower((unsigned char)q.s[k]));
            char *pq = hellaswag_preprocess(str_take(&q));
            free(q.s);
            ctx = make_prompt(def, pq);
            free(pq);
            char **pre = xmalloc(sizeof(char *) * (size_t)n);
            for (int k = 0; k < n; k++) pre[k] = hellaswag_preprocess(ch[k]);
            free(ch);
            doc_set(d, ctx, n, pre, def->delim, gold, line - 1);
            for (int k = 0; k < n; k++) free(pre[k]);
            free(pre);
            if (gold < 0 || gold >= n) goto bad_gold;
            return 0;
        }
        case TASK_FMT_LAMBADA: {
            const char *text = jstr(o, "text");
            if (!text) {
                what = "expected {\"text\": str}";
                break;
            }
            // context = " ".join(text.split(" ")[:-1]), target = " " + text.split(" ")[-1]
            const char *sp = strrchr(text, ' ');
            char *head = xstrdup(text);
            head[sp ? strlen(text) - strlen(sp) : 0] = 0;
            ctx = make_prompt(def, head);
            free(head);
            Str t = {0};
            str_add(&t, " ");
            str_add(&t, sp ? sp + 1 : text);
            char *tgt = str_take(&t);
            doc_set(d, ctx, 1, &tgt, def->delim, 0, line - 1);
            free(tgt);
            return 0;
        }
        case TASK_FMT_MMLU:
            break;
    }
    if (what) {
        free(ch);
        free(ctx);
        return ps_err_set("%s:%d: %s", path, line, what);
    }
    doc_set(d, ctx, n, ch, def->delim, gold, line - 1);
    free(ch);
    if (gold < 0 || gold >= n) goto bad_gold;
    return 0;
bad_gold:
    return ps_err_set("%s:%d: gold %d is not a choice index (0..%d)", path, line, d->gold,
                      d->n_choices - 1);
}

static char *data_path(const char *dir, const char *file) {
    return file[0] == '/' ? xstrdup(file) : ps_path_join(dir, file);
}

static int load_jsonl(const TaskDef *def, const char *dir, Task *t) {
    char *path = data_path(dir, def->file), *lpath = NULL;
    size_t len = 0, llen = 0;
    char *text = ps_read_file(path, &len), *labels = NULL;
    int rc = 0, cap = 0, line = 0;
    if (!text) {
        rc = ps_err_set("task %s: cannot read %s (set --data-dir to the folder of the task data)",
                        def->name, path);
        goto out;
    }
    if (def->labels[0]) {
        lpath = data_path(dir, def->labels);
        labels = ps_read_file(lpath, &llen);
        if (!labels) {
            rc = ps_err_set("task %s: cannot read the labels file %s", def->name, lpath);
            goto out;
        }
    }
    char *lab = labels;
    for (char *p = text; p < text + len;) {
        char *nl = memchr(p, '\n', (size_t)(text + len - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(text + len - p);
        line++;
        char *lab_line = NULL;
        if (labels) {
            lab_line = lab && *lab ? lab : NULL;
            if (lab) {
                char *lnl = strchr(lab, '\n');
                lab = lnl ? lnl + 1 : NULL;
            }
        }
        int blank = 1;
        for (size_t k = 0; k < n; k++) blank &= isspace((unsigned char)p[k]) != 0;
        if (!blank) {
            char what[1100];
            snprintf(what, sizeof what, "%s:%d", path, line);
            cJSON *o = ps_json_parse(p, n, what);
            if (!cJSON_IsObject(o)) {
                if (o) ps_err_set("%s:%d: not a JSON object", path, line);
                cJSON_Delete(o);
                rc = -1;
                goto out;
            }
            TaskDoc *d = push_doc(t, &cap);
            rc = jsonl_doc(def, o, path, line, lab_line, d);
            cJSON_Delete(o);
            if (rc) {
                if (!d->context) t->n_docs--;  // nothing was allocated for it
                goto out;
            }
        }
        p += n + 1;
    }
    if (t->n_docs == 0) rc = ps_err_set("%s: no documents", path);
out:
    free(text);
    free(labels);
    free(path);
    free(lpath);
    return rc;
}

// ---------------------------------------------------------------------------
// MMLU: the hendrycks CSVs inside a zip (stored or deflated members).
typedef struct {
    char *name;
    size_t off, csize, usize;
    int method;
} ZipEntry;

static uint32_t rd16(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}
static uint32_t rd32(const unsigned char *p) {
    return rd16(p) | rd16(p + 2) << 16;
}

enum { ZIP_MAX_MEMBER = 64 << 20 };

// The central directory of a zip held in memory; -1 with ps_err when malformed.
static int zip_list(const unsigned char *z, size_t len, const char *path, ZipEntry **out, int *n) {
    *out = NULL;
    *n = 0;
    long eocd = -1;
    for (long i = (long)len - 22; i >= 0 && i >= (long)len - 22 - 65535; i--)
        if (rd32(z + i) == 0x06054b50) {
            eocd = i;
            break;
        }
    if (eocd < 0) return ps_err_set("%s: not a zip file (no end of central directory)", path);
    int count = (int)rd16(z + eocd + 10);
    size_t p = rd32(z + eocd + 16);
    ZipEntry *e = xcalloc((size_t)count + 1, sizeof(ZipEntry));
    for (int i = 0; i < count; i++) {
        if (p + 46 > len || rd32(z + p) != 0x02014b50) {
            for (int k = 0; k < i; k++) free(e[k].name);
            free(e);
            return ps_err_set("%s: corrupt zip central directory (entry %d)", path, i);
        }
        size_t nl = rd16(z + p + 28), xl = rd16(z + p + 30), cl = rd16(z + p + 32);
        if (p + 46 + nl > len) {
            for (int k = 0; k < i; k++) free(e[k].name);
            free(e);
            return ps_err_set(
                "%s: corrupt zip central directory (entry %d: its name runs past "
                "the end of the file)",
                path, i);
        }
        e[i].method = (int)rd16(z + p + 10);
        e[i].csize = rd32(z + p + 20);
        e[i].usize = rd32(z + p + 24);
        e[i].off = rd32(z + p + 42);
        e[i].name = xmalloc(nl + 1);
        memcpy(e[i].name, z + p + 46, nl);
        e[i].name[nl] = 0;
        p += 46 + nl + xl + cl;
    }
    *out = e;
    *n = count;
    return 0;
}

static char *zip_read(const unsigned char *z, size_t len, const ZipEntry *e, const char *path) {
    if (e->off + 30 > len || rd32(z + e->off) != 0x04034b50) {
        ps_err_set("%s: %s: corrupt local header", path, e->name);
        return NULL;
    }
    size_t data = e->off + 30 + rd16(z + e->off + 26) + rd16(z + e->off + 28);
    if (data + e->csize > len) {
        ps_err_set("%s: %s: truncated", path, e->name);
        return NULL;
    }
    // The size is the file's word: bound it before allocating (the largest MMLU CSV is
    // under 1 MiB; a member claiming more is a zip bomb or a lie).
    if (e->usize > ZIP_MAX_MEMBER) {
        ps_err_set("%s: %s: uncompressed size %zu bytes is over the %d MiB limit for a task file",
                   path, e->name, e->usize, ZIP_MAX_MEMBER >> 20);
        return NULL;
    }
    char *out = xmalloc(e->usize + 1);
    out[e->usize] = 0;
    if (e->method == 0 && e->csize == e->usize) {
        memcpy(out, z + data, e->usize);
        return out;
    }
    if (e->method != 8) {
        free(out);
        ps_err_set("%s: %s: compression method %d is not supported", path, e->name, e->method);
        return NULL;
    }
    z_stream s = {0};
    s.next_in = (unsigned char *)(z + data);
    s.avail_in = (uInt)e->csize;
    s.next_out = (unsigned char *)out;
    s.avail_out = (uInt)e->usize;
    int ok = inflateInit2(&s, -MAX_WBITS) == Z_OK && inflate(&s, Z_FINISH) == Z_STREAM_END &&
             s.total_out == e->usize;
    inflateEnd(&s);
    if (!ok) {
        free(out);
        ps_err_set("%s: %s: corrupt deflate data", path, e->name);
        return NULL;
    }
    return out;
}

// Python's csv.reader (default dialect) over a file opened in text mode
// (open(path, encoding="utf-8"), as the MMLU loaders do): universal newlines
// first turn "\r\n" and a lone "\r" into "\n", also inside quoted fields.
// Returns the number of rows; the fields of row r are cells[r * 6 ..] (MMLU
// rows have 6).
static int csv_rows(const char *raw, const char *what, char ***cells_out) {
    Str f = {0}, u = {0};
    for (const char *q = raw; *q; q++) {
        if (*q == '\r') {
            str_addn(&u, "\n", 1);
            if (q[1] == '\n') q++;
        } else {
            str_addn(&u, q, 1);
        }
    }
    const char *text = str_take(&u);
    char **cells = NULL;
    int n_cells = 0, cap = 0, row_fields = 0, rows = 0;
    const char *p = text;
    while (*p || row_fields > 0) {  // a ',' at the very end still opens one (empty) field
        // one field
        f.n = 0;
        str_addn(&f, "", 0);
        if (*p == '"') {
            p++;
            for (;;) {
                if (!*p) break;
                if (*p == '"' && p[1] == '"') {
                    str_addn(&f, "\"", 1);
                    p += 2;
                } else if (*p == '"') {
                    p++;
                    break;
                } else {
                    str_addn(&f, p++, 1);
                }
            }
            while (*p && *p != ',' && *p != '\n' && *p != '\r') str_addn(&f, p++, 1);
        } else {
            while (*p && *p != ',' && *p != '\n' && *p != '\r') str_addn(&f, p++, 1);
        }
        if (n_cells == cap) {
            cap = cap ? cap * 2 : 64;
            cells = xrealloc(cells, sizeof(char *) * (size_t)cap);
        }
        cells[n_cells++] = xstrdup(f.s);
        row_fields++;
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p == '\r') p++;
        if (*p == '\n') p++;
        if (row_fields != 6) {
            for (int k = 0; k < n_cells; k++) free(cells[k]);
            free(cells);
            free(f.s);
            free(u.s);
            ps_err_set("%s: row %d has %d fields, expected 6 (question,A,B,C,D,answer)", what,
                       rows + 1, row_fields);
            return -1;
        }
        row_fields = 0;
        rows++;
    }
    free(f.s);
    free(u.s);
    *cells_out = cells;
    return rows;
}

static int cmp_entry_name(const void *a, const void *b) {
    return strcmp(((const ZipEntry *)a)->name, ((const ZipEntry *)b)->name);
}

// "{question.strip()}\nA. {A}\nB. {B}\nC. {C}\nD. {D}\nAnswer:"
static char *mmlu_question(const TaskDef *def, char **row) {
    char *q = strip_ws(row[0]);
    Str b = {0};
    str_add(&b, q);
    const char *lab[4] = {"\nA. ", "\nB. ", "\nC. ", "\nD. "};
    for (int k = 0; k < 4; k++) {
        str_add(&b, lab[k]);
        str_add(&b, row[1 + k]);
    }
    free(q);
    char *out = make_prompt(def, str_take(&b));
    free(b.s);
    return out;
}

// MMLU subject -> category, from the "tag" of each lm_eval/tasks/mmlu/default/mmlu_<subject>.yaml
// (lm-eval 0.4.13; the categorization of Hendrycks et al.).
const char *const task_mmlu_category_names[TASK_MMLU_CATEGORIES] = {
    "stem", "other", "social_sciences", "humanities"};
static const struct {
    const char *subject;
    int cat;
} MMLU_CATS[] = {
    {"abstract_algebra", 0},
    {"anatomy", 0},
    {"astronomy", 0},
    {"business_ethics", 1},
    {"clinical_knowledge", 1},
    {"college_biology", 0},
    {"college_chemistry", 0},
    {"college_computer_science", 0},
    {"college_mathematics", 0},
    {"college_medicine", 1},
    {"college_physics", 0},
    {"computer_security", 0},
    {"conceptual_physics", 0},
    {"econometrics", 2},
    {"electrical_engineering", 0},
    {"elementary_mathematics", 0},
    {"formal_logic", 3},
    {"global_facts", 1},
    {"high_school_biology", 0},
    {"high_school_chemistry", 0},
    {"high_school_computer_science", 0},
    {"high_school_european_history", 3},
    {"high_school_geography", 2},
    {"high_school_government_and_politics", 2},
    {"high_school_macroeconomics", 2},
    {"high_school_mathematics", 0},
    {"high_school_microeconomics", 2},
    {"high_school_physics", 0},
    {"high_school_psychology", 2},
    {"high_school_statistics", 0},
    {"high_school_us_history", 3},
    {"high_school_world_history", 3},
    {"human_aging", 1},
    {"human_sexuality", 2},
    {"international_law", 3},
    {"jurisprudence", 3},
    {"logical_fallacies", 3},
    {"machine_learning", 0},
    {"management", 1},
    {"marketing", 1},
    {"medical_genetics", 1},
    {"miscellaneous", 1},
    {"moral_disputes", 3},
    {"moral_scenarios", 3},
    {"nutrition", 1},
    {"philosophy", 3},
    {"prehistory", 3},
    {"professional_accounting", 1},
    {"professional_law", 3},
    {"professional_medicine", 1},
    {"professional_psychology", 2},
    {"public_relations", 2},
    {"security_studies", 2},
    {"sociology", 2},
    {"us_foreign_policy", 2},
    {"virology", 1},
    {"world_religions", 3},
};

int task_mmlu_category(const char *subject) {
    for (size_t i = 0; i < sizeof MMLU_CATS / sizeof MMLU_CATS[0]; i++)
        if (!strcmp(MMLU_CATS[i].subject, subject)) return MMLU_CATS[i].cat;
    return -1;
}

static int load_mmlu(const TaskDef *def, const char *dir, int shots, Task *t) {
    char *path = data_path(dir, def->file);
    size_t len = 0;
    unsigned char *z = (unsigned char *)ps_read_file(path, &len);
    ZipEntry *e = NULL;
    int n_e = 0, rc = 0, cap = 0;
    if (!z) {
        rc = ps_err_set("task %s: cannot read %s (set --data-dir to the folder of the task data)",
                        def->name, path);
        goto out;
    }
    if ((rc = zip_list(z, len, path, &e, &n_e))) goto out;
    qsort(e, (size_t)n_e, sizeof *e, cmp_entry_name);
    static const char *TEST = "data/test/", *SUF = "_test.csv";
    for (int i = 0; i < n_e && !rc; i++) {
        size_t nl = strlen(e[i].name);
        if (strncmp(e[i].name, TEST, strlen(TEST)) || nl <= strlen(TEST) + strlen(SUF) ||
            strcmp(e[i].name + nl - strlen(SUF), SUF))
            continue;
        char subject[128];
        size_t sl = nl - strlen(TEST) - strlen(SUF);
        if (sl >= sizeof subject) continue;
        memcpy(subject, e[i].name + strlen(TEST), sl);
        subject[sl] = 0;
        // description, then the first `shots` dev rows with their answers
        Str head = {0};
        str_add(&head, "The following are multiple choice questions (with answers) about ");
        for (const char *c = subject; *c; c++) str_addn(&head, *c == '_' ? " " : c, 1);
        str_add(&head, ".\n\n");
        if (shots > 0) {
            char dev_name[256];
            snprintf(dev_name, sizeof dev_name, "data/dev/%s_dev.csv", subject);
            ZipEntry key = {.name = dev_name};
            ZipEntry *de = bsearch(&key, e, (size_t)n_e, sizeof *e, cmp_entry_name);
            char *dev = de ? zip_read(z, len, de, path) : NULL;
            char **cells = NULL;
            int rows = dev ? csv_rows(dev, dev_name, &cells) : -1;
            free(dev);
            if (rows < shots) {
                if (!de)
                    ps_err_set("%s: %s is missing (needed for --num-fewshot)", path, dev_name);
                else if (rows >= 0)
                    ps_err_set("%s: %s has %d rows, fewer than --num-fewshot %d", path, dev_name,
                               rows, shots);
                for (int k = 0; k < rows * 6; k++) free(cells[k]);
                free(cells);
                free(head.s);
                rc = -1;
                break;
            }
            for (int r = 0; r < shots; r++) {
                char *q = mmlu_question(def, cells + r * 6);
                str_add(&head, q);
                str_add(&head, def->delim);
                str_add(&head, cells[r * 6 + 5]);
                str_add(&head, "\n\n");
                free(q);
            }
            for (int k = 0; k < rows * 6; k++) free(cells[k]);
            free(cells);
        }
        char *csv = zip_read(z, len, &e[i], path);
        char **cells = NULL;
        int rows = csv ? csv_rows(csv, e[i].name, &cells) : -1;
        free(csv);
        if (rows < 0) {
            free(head.s);
            rc = -1;
            break;
        }
        int cat = task_mmlu_category(subject);
        if (cat < 0) {
            free(head.s);
            for (int k = 0; k < rows * 6; k++) free(cells[k]);
            free(cells);
            rc = ps_err_set("%s: %s: '%s' is not one of MMLU's 57 subjects", path, e[i].name,
                            subject);
            break;
        }
        int g = t->n_groups++;
        t->group_names = xrealloc(t->group_names, sizeof(char *) * (size_t)t->n_groups);
        t->group_cat = xrealloc(t->group_cat, sizeof(int) * (size_t)t->n_groups);
        t->group_names[g] = xstrdup(subject);
        t->group_cat[g] = cat;
        for (int r = 0; r < rows && !rc; r++) {
            char **row = cells + r * 6;
            const char *ans = row[5];
            if (strlen(ans) != 1 || ans[0] < 'A' || ans[0] > 'D') {
                rc = ps_err_set("%s: %s row %d: answer '%s' is not A, B, C or D", path, e[i].name,
                                r + 1, ans);
                break;
            }
            Str ctx = {0};
            str_add(&ctx, head.s);
            char *q = mmlu_question(def, row);
            str_add(&ctx, q);
            free(q);
            char *letters[4] = {"A", "B", "C", "D"};
            TaskDoc *d = push_doc(t, &cap);
            doc_set(d, str_take(&ctx), 4, letters, def->delim, ans[0] - 'A', r);
            d->group = g;
        }
        for (int k = 0; k < rows * 6; k++) free(cells[k]);
        free(cells);
        free(head.s);
    }
    if (!rc && t->n_docs == 0) rc = ps_err_set("%s: no data/test/*_test.csv members", path);
out:
    for (int i = 0; i < n_e; i++) free(e[i].name);
    free(e);
    free(z);
    free(path);
    return rc;
}

// ---------------------------------------------------------------------------
int task_load(const TaskDef *def, const char *data_dir, int num_fewshot, Task *t) {
    memset(t, 0, sizeof *t);
    t->def = *def;
    t->num_fewshot = num_fewshot;
    if (num_fewshot > 0 && def->fmt != TASK_FMT_MMLU) {
        return ps_err_set("task %s: --num-fewshot is only supported for mmlu (its dev split)",
                          def->name);
    }
    int rc;
    if (def->fmt == TASK_FMT_MMLU) {
        rc = load_mmlu(def, data_dir, num_fewshot, t);
    } else {
        t->n_groups = 1;
        t->group_names = xmalloc(sizeof(char *));
        t->group_names[0] = xstrdup(def->name);
        t->group_cat = xcalloc(1, sizeof(int));
        rc = load_jsonl(def, data_dir, t);
    }
    if (rc) task_free(t);
    return rc;
}

static void doc_free(TaskDoc *d) {
    free(d->context);
    for (int i = 0; i < d->n_choices; i++) free(d->conts[i]);
    free(d->conts);
    free(d->choice_len);
}

void task_subset(Task *t, int limit, uint64_t seed) {
    if (limit <= 0) return;
    char *keep = xcalloc((size_t)t->n_docs, 1);
    Rng rng;
    rng_seed(&rng, seed);
    for (int g = 0; g < t->n_groups; g++) {
        int n = 0;
        for (int i = 0; i < t->n_docs; i++) n += t->docs[i].group == g;
        int *idx = xmalloc(sizeof(int) * (size_t)(n ? n : 1)), k = 0;
        for (int i = 0; i < t->n_docs; i++)
            if (t->docs[i].group == g) idx[k++] = i;
        if (seed)  // Fisher-Yates: a seeded random subset
            for (int i = n - 1; i > 0; i--) {
                int j = (int)(rng_u64(&rng) % (uint64_t)(i + 1)), tmp = idx[i];
                idx[i] = idx[j];
                idx[j] = tmp;
            }
        for (int i = 0; i < n && i < limit; i++) keep[idx[i]] = 1;
        free(idx);
    }
    int w = 0;
    for (int i = 0; i < t->n_docs; i++) {
        if (keep[i])
            t->docs[w++] = t->docs[i];
        else
            doc_free(&t->docs[i]);
    }
    t->n_docs = w;
    free(keep);
}

void task_free(Task *t) {
    for (int i = 0; i < t->n_docs; i++) doc_free(&t->docs[i]);
    free(t->docs);
    for (int g = 0; g < t->n_groups; g++) free(t->group_names[g]);
    free(t->group_names);
    free(t->group_cat);
    memset(t, 0, sizeof *t);
}
