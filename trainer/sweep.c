// sweep.c: `postshare sweep CONFIG.yaml [--set k=v ...] [--jobs N] [--dry-run |
// --print-commands | --report]` (see sweep.h and docs/sweeps.md). It reads top to
// bottom: the sweep section (libyaml) -> the points, each one's whole job config
// validated by the job module before anything runs -> the point directories and
// their job.yaml -> the unfinished points, each a child `postshare train
// POINT/job.yaml` whose output is shown with a "[point k/N]" prefix and kept in
// POINT/train.log -> the report: sweep.csv and the gnuplot plots.
#define _POSIX_C_SOURCE 200809L
#include "sweep.h"

#include "plot.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <yaml.h>

#include "checkpoint.h"
#include "cliargs.h"
#include "common.h"
#include "job.h"
#include "resume.h"

// More points than this is almost surely a mistake in the lists (and each
// point is a whole training run).
#define SWEEP_MAX_POINTS 100000
// The key on the x axis of the perplexity plot.
#define REG_WEIGHT_KEY "share.reg.weight"

static void usage(FILE *f) {
    fprintf(f,
            "usage: postshare sweep CONFIG.yaml [--set section.key=value ...] [--jobs N]\n"
            "                       [--dry-run | --print-commands | --report]\n"
            "  Trains one run per point of the config's sweep section (the cartesian product\n"
            "  of its lists, the first key varying slowest) under run.out_dir/run.name, each\n"
            "  in POINT/ with its job.yaml and train.log. Points that finished earlier (they\n"
            "  have results.json) are skipped; the others resume from their checkpoints.\n"
            "  Then writes sweep.csv, ppl_vs_reg_weight.png and loss_curves.png there.\n"
            "  --set KEY=VALUE    override one key of every point (repeatable)\n"
            "  --jobs N           train N points at a time (default 1); set `threads` so that\n"
            "                     they share the cores\n"
            "  --dry-run          list the points and whether each is finished; change nothing\n"
            "  --print-commands   write the unfinished points' job.yaml and print the command\n"
            "                     that trains each (for a cluster scheduler); train nothing\n"
            "  --report           only collect: write sweep.csv and the plots\n"
            "exit status: 0 every point trained, 1 an error or a failed point, %d stopped by\n"
            "  SIGINT/SIGTERM (the running points checkpoint; run the same command to go on)\n",
            PS_EXIT_INTERRUPTED);
}

// ---------------------------------------------------------------------------
// Small helpers

// printf into a fresh string.
__attribute__((format(printf, 1, 2))) static char *xasprintf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    CHECK(n >= 0, "vsnprintf failed");
    char *s = xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static int exists_in(const char *dir, const char *name) {
    char *p = ps_path_join(dir, name);
    int yes = access(p, F_OK) == 0;
    free(p);
    return yes;
}

static int write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -1;
        p += w, n -= (size_t)w;
    }
    return 0;
}

// A word the shell reads back as itself: as is when it is plain, else in single quotes.
static void print_shell_word(const char *s) {
    if (*s &&
        strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./=+:,@%-") ==
            strlen(s)) {
        fputs(s, stdout);
        return;
    }
    putchar('\'');
    for (; *s; s++) {
        if (*s == '\'')
            fputs("'\\''", stdout);  // close the quotes, an escaped quote, reopen them
        else
            putchar(*s);
    }
    putchar('\'');
}

// A string inside a gnuplot double-quoted string.
static void gp_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static void fmt_duration(char *buf, size_t n, double s) {
    int t = (int)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%dh%02dm%02ds", t / 3600, (t / 60) % 60, t % 60);
    else if (t >= 60)
        snprintf(buf, n, "%dm%02ds", t / 60, t % 60);
    else
        snprintf(buf, n, "%.1fs", s);
}

// Start file (looked up in PATH when it has no '/') with argv, its stdout and
// stderr going to out_fd, in directory cwd (NULL: this one). Returns the pid.
// A child that cannot start writes why to out_fd and exits 127.
static pid_t spawn(const char *file, char *const argv[], const char *cwd, int out_fd) {
    // what stdio holds would otherwise be written a second time by the child
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) ps_die("cannot start %s: fork: %s", file, strerror(errno));
    if (pid == 0) {
        if (dup2(out_fd, 1) < 0 || dup2(out_fd, 2) < 0) _exit(127);
        if (cwd && chdir(cwd) != 0) {
            dprintf(2, "postshare sweep: cannot enter %s: %s\n", cwd, strerror(errno));
            _exit(127);
        }
        execvp(file, argv);
        dprintf(2, "postshare sweep: cannot run %s: %s\n", file, strerror(errno));
        _exit(127);
    }
    return pid;
}

static int wait_child(pid_t pid) {
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) ps_die("waitpid: %s", strerror(errno));
    return st;
}

// ---------------------------------------------------------------------------
// The sweep: its axes (one per swept key) and its points

typedef struct {
    char *key;   // dotted job key
    int line;    // of the key in the config
    int n;       // number of values
    char **val;  // each value as --set takes it: "0.5", or "0.9,0.99" for a list
    int *vline;  // line of each value
} Axis;

typedef struct {
    char name[JOB_NAME_MAX];  // its run.name under the sweep directory
    char *dir;                // sweep directory/name
    char *job;                // dir/job.yaml
    char *yaml;               // the content of job.yaml: a comment line, then the resolved job
    char *values;             // "key=value, key=value" for messages
    int *vi;                  // index of its value on each axis
    int finished;             // dir/results.json exists
    char *failure;            // why its run failed this time; NULL: it did not
} Point;

typedef struct {
    const char *path;  // the config file
    char *text;        // its content
    char **sets;       // --set, applied to every point before the swept values
    int n_sets;
    Axis *ax;
    int n_ax;
    int threads;  // the config's threads (for the --jobs advice)
    char *dir;    // the sweep directory, absolute
    Point *pt;
    int n_pt;
} Sweep;

static int line_of(const yaml_node_t *n) {
    return (int)n->start_mark.line + 1;
}

static const char *node_kind(const yaml_node_t *n) {
    return n->type == YAML_MAPPING_NODE    ? "a mapping"
           : n->type == YAML_SEQUENCE_NODE ? "a list"
                                           : "a scalar";
}

// The items of a list value (for list-valued keys such as train.betas) joined
// with ",", as --set takes them.
static char *join_items(const Sweep *s, yaml_document_t *doc, yaml_node_t *seq, const char *key) {
    yaml_node_item_t *it = seq->data.sequence.items.start;
    int n = (int)(seq->data.sequence.items.top - it);
    size_t cap = 1, len = 0;
    for (int j = 0; j < n; j++) {
        yaml_node_t *e = yaml_document_get_node(doc, it[j]);
        if (e->type != YAML_SCALAR_NODE)
            ps_die("%s:%d: sweep: %s: a value nested deeper than a list of scalars", s->path,
                   line_of(e), key);
        cap += e->data.scalar.length + 1;
    }
    char *out = xmalloc(cap);
    out[0] = 0;
    for (int j = 0; j < n; j++) {
        yaml_node_t *e = yaml_document_get_node(doc, it[j]);
        len += (size_t)snprintf(out + len, cap - len, "%s%s", j ? "," : "",
                                (const char *)e->data.scalar.value);
    }
    return out;
}

static void add_axis(Sweep *s, yaml_document_t *doc, const char *key, int line, yaml_node_t *list) {
    for (int a = 0; a < s->n_ax; a++)
        if (!strcmp(s->ax[a].key, key))
            ps_die("%s:%d: sweep: duplicate key '%s' (first on line %d)", s->path, line, key,
                   s->ax[a].line);
    yaml_node_item_t *it = list->data.sequence.items.start;
    int n = (int)(list->data.sequence.items.top - it);
    if (n == 0) ps_die("%s:%d: sweep: %s: the list of values is empty", s->path, line, key);
    s->ax = xrealloc(s->ax, sizeof(Axis) * (size_t)(s->n_ax + 1));
    Axis *ax = &s->ax[s->n_ax++];
    ax->key = xstrdup(key);
    ax->line = line;
    ax->n = n;
    ax->val = xcalloc((size_t)n, sizeof(char *));
    ax->vline = xcalloc((size_t)n, sizeof(int));
    for (int j = 0; j < n; j++) {
        yaml_node_t *e = yaml_document_get_node(doc, it[j]);
        ax->vline[j] = line_of(e);
        if (e->type == YAML_SCALAR_NODE)
            ax->val[j] = xstrdup((const char *)e->data.scalar.value);
        else if (e->type == YAML_SEQUENCE_NODE)
            ax->val[j] = join_items(s, doc, e, key);
        else
            ps_die(
                "%s:%d: sweep: %s: value %d is a mapping; expected a value (or a list, for "
                "list-valued keys)",
                s->path, ax->vline[j], key, j + 1);
    }
}

// The entries of a sweep mapping under prefix: a list makes an axis; a nested
// mapping extends the key, as in a job ("share: {ratio: [...]}" is share.ratio).
static void collect_axes(Sweep *s, yaml_document_t *doc, yaml_node_t *map, const char *prefix) {
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *kn = yaml_document_get_node(doc, p->key);
        yaml_node_t *vn = yaml_document_get_node(doc, p->value);
        if (kn->type != YAML_SCALAR_NODE)
            ps_die("%s:%d: sweep: keys must be plain names, got %s", s->path, line_of(kn),
                   node_kind(kn));
        char *key =
            xasprintf("%s%s%s", prefix, prefix[0] ? "." : "", (const char *)kn->data.scalar.value);
        if (vn->type == YAML_MAPPING_NODE)
            collect_axes(s, doc, vn, key);
        else if (vn->type == YAML_SEQUENCE_NODE)
            add_axis(s, doc, key, line_of(kn), vn);
        else
            ps_die("%s:%d: sweep: %s: expected a list of values like [0.1, 0.5], got '%s'", s->path,
                   line_of(vn), key, (const char *)vn->data.scalar.value);
        free(key);
    }
}

// The sweep section of the config (the job module skips it).
static void parse_sweep_section(Sweep *s) {
    yaml_parser_t parser;
    yaml_document_t doc;
    if (job_yaml_shape_ok(s->text, s->path)) ps_die("%s", ps_err_msg());
    CHECK(yaml_parser_initialize(&parser), "libyaml: cannot initialize the parser");
    yaml_parser_set_input_string(&parser, (const unsigned char *)s->text, strlen(s->text));
    if (!yaml_parser_load(&parser, &doc))
        ps_die("%s:%zu: malformed YAML: %s", s->path, parser.problem_mark.line + 1,
               parser.problem ? parser.problem : "parse error");
    yaml_node_t *root = yaml_document_get_root_node(&doc), *sec = NULL;
    if (!root || root->type != YAML_MAPPING_NODE)
        ps_die(
            "%s: expected a mapping of sections at the top level (a job config plus a sweep "
            "section)",
            s->path);
    int line = 0;
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start;
         p < root->data.mapping.pairs.top && !sec; p++) {
        yaml_node_t *kn = yaml_document_get_node(&doc, p->key);
        if (kn->type == YAML_SCALAR_NODE && !strcmp((const char *)kn->data.scalar.value, "sweep"))
            sec = yaml_document_get_node(&doc, p->value), line = line_of(kn);
    }
    if (!sec)
        ps_die(
            "%s: no sweep section: a sweep config is a job config plus `sweep:`, which maps "
            "job keys to lists of values (docs/sweeps.md); `postshare train` runs a single job",
            s->path);
    int empty = sec->type == YAML_SCALAR_NODE && sec->data.scalar.length == 0;  // "sweep:" alone
    if (sec->type != YAML_MAPPING_NODE && !empty)
        ps_die("%s:%d: sweep: expected a mapping of job keys to lists of values, got %s", s->path,
               line, node_kind(sec));
    if (!empty) collect_axes(s, &doc, sec, "");
    if (!s->n_ax)
        ps_die(
            "%s:%d: sweep: the section is empty; list job keys with their values, e.g. "
            "share.ratio: [0.1, 0.3]",
            s->path, line);
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
}

// Keys the sweep itself sets, and keys swept and also given with --set.
static void check_axis_keys(const Sweep *s) {
    for (int a = 0; a < s->n_ax; a++) {
        const Axis *ax = &s->ax[a];
        if (!strcmp(ax->key, "run.name") || !strcmp(ax->key, "run.out_dir"))
            ps_die(
                "%s:%d: sweep: %s cannot be swept: every point runs in the sweep directory "
                "(the config's run.out_dir/run.name) under a name made from its values",
                s->path, ax->line, ax->key);
        for (int i = 0; i < s->n_sets; i++) {
            const char *k = s->sets[i];
            while (*k == ' ') k++;
            size_t n = strcspn(k, "= ");
            if (n == strlen(ax->key) && !strncmp(k, ax->key, n))
                ps_die("%s:%d: sweep: %s is swept, and also given as --set %s; drop one of them",
                       s->path, ax->line, ax->key, s->sets[i]);
        }
    }
}

// Load the job of one combination of values (vi: a value index per axis),
// after the --set overrides; name: the point's run name in the sweep
// directory, or NULL to keep the config's run. On an error, dies naming the
// config and, when a swept value is to blame, its line, key and value; `what`
// (e.g. "CONFIG: sweep point 3/8 (...): ") leads other messages.
static void load_job(const Sweep *s, const int *vi, const char *name, const char *what,
                     JobConfig *out) {
    int n = 0;
    char **ov = xcalloc((size_t)(s->n_sets + s->n_ax + 2), sizeof(char *));
    for (int i = 0; i < s->n_sets; i++) ov[n++] = xstrdup(s->sets[i]);
    for (int a = 0; a < s->n_ax; a++)
        ov[n++] = xasprintf("%s=%s", s->ax[a].key, s->ax[a].val[vi[a]]);
    if (name) {
        ov[n++] = xasprintf("run.out_dir=%s", s->dir);
        ov[n++] = xasprintf("run.name=%s", name);
    }
    if (job_load_sweep_base(s->text, s->path, n, ov, out) != 0) {
        // the job module names an override it rejects "--set KEY=VALUE: ..."
        const char *msg = ps_err_msg();
        for (int a = 0; a < s->n_ax; a++) {
            char *pre = xasprintf("--set %s: ", ov[s->n_sets + a]);
            if (!strncmp(msg, pre, strlen(pre)))
                ps_die("%s:%d: sweep: %s: value '%s': %s", s->path, s->ax[a].vline[vi[a]],
                       s->ax[a].key, s->ax[a].val[vi[a]], msg + strlen(pre));
            free(pre);
        }
        ps_die("%s%s", what, msg);
    }
    for (int i = 0; i < n; i++) free(ov[i]);
    free(ov);
}

// Every value of every axis, the other axes at their first value: a bad value
// is reported at its own line, before any combination; two values of one key
// that make the same job would train the same run twice.
static void check_values(const Sweep *s) {
    int *vi = xcalloc((size_t)s->n_ax, sizeof(int));
    for (int a = 0; a < s->n_ax; a++) {
        const Axis *ax = &s->ax[a];
        char **yaml = xcalloc((size_t)ax->n, sizeof(char *));
        for (int j = 0; j < ax->n; j++) {
            memset(vi, 0, sizeof(int) * (size_t)s->n_ax);
            vi[a] = j;
            JobConfig c;
            load_job(s, vi, NULL, "", &c);
            yaml[j] = job_to_yaml(&c);
            for (int i = 0; i < j; i++)
                if (!strcmp(yaml[i], yaml[j]))
                    ps_die("%s:%d: sweep: %s: the values '%s' and '%s' give the same job", s->path,
                           ax->vline[j], ax->key, ax->val[i], ax->val[j]);
        }
        for (int j = 0; j < ax->n; j++) free(yaml[j]);
        free(yaml);
    }
    free(vi);
}

// The config's run directory (all first values), made absolute: the points'
// job.yaml then work from any directory (a cluster job's, say).
static void find_sweep_dir(Sweep *s) {
    int *vi = xcalloc((size_t)s->n_ax, sizeof(int));
    JobConfig base;
    load_job(s, vi, NULL, "", &base);
    free(vi);
    s->threads = base.threads;
    char *dir = job_run_dir(&base);
    const char *d = dir;
    while (d[0] == '.' && d[1] == '/') d += 2;
    if (d[0] == '/') {
        s->dir = xstrdup(d);
    } else {
        char cwd[4096];
        if (!getcwd(cwd, sizeof cwd))
            ps_die("cannot get the current directory: %s", strerror(errno));
        s->dir = ps_path_join(cwd, d);
    }
    free(dir);
}

// A point's swept values as "key=value" joined by sep, leaving out the key
// skip (NULL: none). Caller frees.
static char *values_text(const Sweep *s, const Point *p, const char *sep, const char *skip) {
    char *t = xstrdup("");
    for (int a = 0; a < s->n_ax; a++) {
        if (skip && !strcmp(s->ax[a].key, skip)) continue;
        char *u = xasprintf("%s%s%s=%s", t, t[0] ? sep : "", s->ax[a].key, s->ax[a].val[p->vi[a]]);
        free(t);
        t = u;
    }
    return t;
}

// Characters that need no quoting in a file name anywhere.
static int safe_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("._=+-", c));
}

// pNN_key=value_key=value, other characters than safe_char as '_', cut to
// fit a run name (the number keeps it unique).
static void point_name(const Sweep *s, int k, int width, Point *p) {
    size_t cap = sizeof p->name;
    size_t u = (size_t)snprintf(p->name, cap, "p%0*d_", width, k + 1);
    char *v = values_text(s, p, "_", NULL);
    for (const char *c = v; *c && u < cap - 1; c++) p->name[u++] = safe_char(*c) ? *c : '_';
    p->name[u] = 0;
    free(v);
}

// Every point of the cartesian product (the first axis varies slowest), with
// its whole job config loaded and validated.
static void make_points(Sweep *s) {
    long n = 1;
    for (int a = 0; a < s->n_ax; a++) {
        n *= s->ax[a].n;
        if (n > SWEEP_MAX_POINTS)
            ps_die("%s: sweep: more than %d points; split the sweep", s->path, SWEEP_MAX_POINTS);
    }
    s->n_pt = (int)n;
    s->pt = xcalloc((size_t)n, sizeof(Point));
    int width = snprintf(NULL, 0, "%ld", n);
    if (width < 2) width = 2;
    for (int k = 0; k < s->n_pt; k++) {
        Point *p = &s->pt[k];
        p->vi = xcalloc((size_t)s->n_ax, sizeof(int));
        int rest = k;  // k in mixed radix, the last axis the fastest digit
        for (int a = s->n_ax - 1; a >= 0; a--) {
            p->vi[a] = rest % s->ax[a].n;
            rest /= s->ax[a].n;
        }
        p->values = values_text(s, p, ", ", NULL);
        point_name(s, k, width, p);
        char *what = xasprintf("%s: sweep point %d/%d (%s): ", s->path, k + 1, s->n_pt, p->values);
        JobConfig c;
        load_job(s, p->vi, p->name, what, &c);
        char *body = job_to_yaml(&c);
        p->yaml = xasprintf("# postshare sweep point %d/%d of %s: %s\n%s", k + 1, s->n_pt, s->path,
                            p->values, body);
        p->dir = job_run_dir(&c);
        p->job = ps_path_join(p->dir, "job.yaml");
        p->finished = exists_in(p->dir, "results.json");
        free(body);
        free(what);
    }
}

static void sweep_free(Sweep *s) {
    for (int a = 0; a < s->n_ax; a++) {
        for (int j = 0; j < s->ax[a].n; j++) free(s->ax[a].val[j]);
        free(s->ax[a].val);
        free(s->ax[a].vline);
        free(s->ax[a].key);
    }
    for (int k = 0; k < s->n_pt; k++) {
        Point *p = &s->pt[k];
        free(p->dir), free(p->job), free(p->yaml), free(p->values), free(p->vi), free(p->failure);
    }
    free(s->ax), free(s->pt), free(s->dir), free(s->text);
}

// ---------------------------------------------------------------------------
// Point directories

// POINT/job.yaml, written atomically; left alone when it already holds the text.
static void write_point_job(const Point *p) {
    if (ps_mkdirs(p->dir) != 0) ps_die("%s", ps_err_msg());
    char *old = access(p->job, F_OK) == 0 ? ps_read_file(p->job, NULL) : NULL;
    if ((!old || strcmp(old, p->yaml) != 0) &&
        ps_write_file_atomic(p->job, p->yaml, strlen(p->yaml)))
        ps_die("%s", ps_err_msg());
    free(old);
}

// A finished point keeps its results even when the config changed since; say
// so when its job.yaml (past the comment line) is not the job the config gives now.
static void note_if_changed(const Point *p) {
    char *old = access(p->job, F_OK) == 0 ? ps_read_file(p->job, NULL) : NULL;
    const char *a = old ? strchr(old, '\n') : NULL, *b = strchr(p->yaml, '\n');
    if (a && b && strcmp(a, b) != 0)
        printf(
            "sweep: note: %s finished under another config than the one given now (compare "
            "%s); delete that directory to train it again\n",
            p->name, p->job);
    free(old);
}

// The newest checkpoint's step, -1 when there is none.
static long long checkpoint_step(const Point *p) {
    CkptEntry *e;
    int n = ckpt_list(p->dir, &e);
    long long step = n > 0 ? (long long)e[0].step : -1;
    ckpt_list_free(e, n);
    return step;
}

static void point_status(const Point *p, char *buf, size_t n) {
    long long step = p->finished ? -1 : checkpoint_step(p);
    if (p->finished)
        snprintf(buf, n, "finished");
    else if (step >= 0)
        snprintf(buf, n, "not finished: resumes at step %lld", step);
    else if (exists_in(p->dir, "metrics.jsonl"))  // not just the job.yaml of --print-commands
        snprintf(buf, n, "not finished: no checkpoint yet");
    else
        snprintf(buf, n, "not started");
}

// --dry-run: one line per point.
static void list_points(const Sweep *s) {
    int wn = (int)strlen("point"), *w = xcalloc((size_t)s->n_ax, sizeof(int));
    for (int k = 0; k < s->n_pt; k++)
        if ((int)strlen(s->pt[k].name) > wn) wn = (int)strlen(s->pt[k].name);
    for (int a = 0; a < s->n_ax; a++) {
        w[a] = (int)strlen(s->ax[a].key);
        for (int j = 0; j < s->ax[a].n; j++)
            if ((int)strlen(s->ax[a].val[j]) > w[a]) w[a] = (int)strlen(s->ax[a].val[j]);
    }
    int wi = snprintf(NULL, 0, "%d/%d", s->n_pt, s->n_pt);
    printf("  %-*s  %-*s", wi, "#", wn, "point");
    for (int a = 0; a < s->n_ax; a++) printf("  %-*s", w[a], s->ax[a].key);
    printf("  status\n");
    int n_fin = 0;
    for (int k = 0; k < s->n_pt; k++) {
        const Point *p = &s->pt[k];
        char idx[32], st[96];
        snprintf(idx, sizeof idx, "%d/%d", k + 1, s->n_pt);
        point_status(p, st, sizeof st);
        printf("  %-*s  %-*s", wi, idx, wn, p->name);
        for (int a = 0; a < s->n_ax; a++) printf("  %-*s", w[a], s->ax[a].val[p->vi[a]]);
        printf("  %s\n", st);
        n_fin += p->finished;
    }
    printf("sweep: %d of %d points finished; nothing was changed (dry run)\n", n_fin, s->n_pt);
    for (int k = 0; k < s->n_pt; k++)
        if (s->pt[k].finished) note_if_changed(&s->pt[k]);
    free(w);
}

// --print-commands: the job.yaml and the train command of each unfinished point.
static void print_commands(const Sweep *s, const char *exe) {
    int todo = 0;
    for (int k = 0; k < s->n_pt; k++) {
        const Point *p = &s->pt[k];
        if (p->finished) continue;
        write_point_job(p);
        print_shell_word(exe);
        fputs(" train ", stdout);
        print_shell_word(p->job);
        putchar('\n');
        todo++;
    }
    char cwd[4096];
    fprintf(stderr,
            "sweep: %d of %d points to train (%d finished); their job.yaml are written. Relative "
            "paths in the config (data, model.init) are relative to the directory a command runs "
            "in: %s\n",
            todo, s->n_pt, s->n_pt - todo, getcwd(cwd, sizeof cwd) ? cwd : "this one");
}

// A write lock on SWEEP/.sweep.lock while points train, so that a second sweep
// of the same directory (which would train the same points at once) stops. The
// lock goes with the process; the children do not hold it.
static int lock_sweep_dir(const Sweep *s) {
    if (ps_mkdirs(s->dir) != 0) ps_die("%s", ps_err_msg());
    char *path = ps_path_join(s->dir, ".sweep.lock");
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) ps_die("%s: cannot open: %s", path, strerror(errno));
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (fcntl(fd, F_SETLK, &fl) != 0) {
        if (errno != EACCES && errno != EAGAIN)
            ps_die("%s: cannot lock: %s", path, strerror(errno));
        long pid = fcntl(fd, F_GETLK, &fl) == 0 ? (long)fl.l_pid : 0;
        ps_die(
            "%s: another postshare sweep (pid %ld) is training these points; wait for it or "
            "stop it",
            s->dir, pid);
    }
    free(path);
    return fd;
}

// ---------------------------------------------------------------------------
// Training the points

// SIGINT/SIGTERM: the first stops new points from starting (the running ones
// got the signal too when it went to the process group, as from a terminal or
// a batch system, and checkpoint); a second passes it on to them, for a signal
// that reached the sweep alone.
static volatile sig_atomic_t g_signal, g_signals;
static void on_stop_signal(int sig) {
    g_signal = sig;
    g_signals = g_signals + 1;
}
static const char *stop_signal_name(void) {
    return g_signal == SIGINT ? "SIGINT" : "SIGTERM";
}

typedef struct {
    int k;  // the point; -1: a free slot
    pid_t pid;
    int fd;   // read end of the child's stdout and stderr
    int log;  // POINT/train.log
    int log_failed;
    double t0;
    size_t len;  // bytes of an unfinished line in buf
    char buf[1024];
} Slot;

typedef struct {
    int trained, skipped, failed, stopped, no_results;
} Tally;

static void start_point(const Sweep *s, const char *exe, int k, Slot *sl) {
    const Point *p = &s->pt[k];
    write_point_job(p);
    char *log_path = ps_path_join(p->dir, "train.log");
    int log = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log < 0) ps_die("%s: cannot open: %s", log_path, strerror(errno));
    time_t now = time(NULL);
    char when[64];
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime(&now));
    if (dprintf(log, "==== postshare sweep, %s: %s train %s\n", when, exe, p->job) < 0)
        ps_die("%s: cannot write: %s", log_path, strerror(errno));
    long long step = checkpoint_step(p);
    if (step >= 0)
        printf("[point %d/%d] %s: resuming at step %lld (log %s)\n", k + 1, s->n_pt, p->name, step,
               log_path);
    else
        printf("[point %d/%d] %s: training (log %s)\n", k + 1, s->n_pt, p->name, log_path);
    int fds[2];
    if (pipe(fds) != 0) ps_die("pipe: %s", strerror(errno));
    for (int i = 0; i < 2; i++)
        CHECK(fcntl(fds[i], F_SETFD, FD_CLOEXEC) == 0, "fcntl: %s", strerror(errno));
    char *argv[] = {(char *)exe, "train", p->job, NULL};
    sl->pid = spawn(exe, argv, NULL, fds[1]);
    CHECK(close(fds[1]) == 0, "close: %s", strerror(errno));  // the child holds its own copy
    sl->k = k, sl->fd = fds[0], sl->log = log, sl->log_failed = 0, sl->len = 0, sl->t0 = ps_now();
    free(log_path);
}

static void emit_line(const Sweep *s, Slot *sl) {
    printf("[point %d/%d] %.*s\n", sl->k + 1, s->n_pt, (int)sl->len, sl->buf);
    sl->len = 0;
}

// Pass on what a child wrote: every byte to its train.log, every line to our
// stdout with the point's prefix. Returns 1 when the child closed its output.
static int drain(const Sweep *s, Slot *sl) {
    char tmp[4096];
    ssize_t r = read(sl->fd, tmp, sizeof tmp);
    if (r < 0 && errno == EINTR) return 0;
    if (r > 0 && write_all(sl->log, tmp, (size_t)r) != 0 && !sl->log_failed) {
        sl->log_failed = 1;
        fprintf(stderr, "postshare: warning: %s/train.log: cannot write: %s\n", s->pt[sl->k].dir,
                strerror(errno));
    }
    for (ssize_t i = 0; i < r; i++) {
        if (tmp[i] == '\n') {
            emit_line(s, sl);
            continue;
        }
        if (sl->len == sizeof sl->buf) emit_line(s, sl);
        sl->buf[sl->len++] = tmp[i];
    }
    fflush(stdout);
    if (r > 0) return 0;
    if (r < 0)
        fprintf(stderr, "postshare: warning: reading a point's output: %s\n", strerror(errno));
    if (sl->len) emit_line(s, sl);
    return 1;
}

// The child of slot sl has closed its output: collect its status and say how it went.
static void finish_point(Sweep *s, Slot *sl, Tally *t) {
    int st = wait_child(sl->pid);
    CHECK(close(sl->fd) == 0, "close: %s", strerror(errno));
    if (close(sl->log) != 0 && !sl->log_failed)
        fprintf(stderr, "postshare: warning: %s/train.log: %s\n", s->pt[sl->k].dir,
                strerror(errno));
    Point *p = &s->pt[sl->k];
    char took[32], *log = ps_path_join(p->dir, "train.log");
    fmt_duration(took, sizeof took, ps_now() - sl->t0);
    printf("[point %d/%d] %s: ", sl->k + 1, s->n_pt, p->name);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        t->trained++;
        p->finished = exists_in(p->dir, "results.json");
        if (p->finished) {
            printf("finished in %s\n", took);
        } else {
            t->no_results++;
            printf(
                "train ended after %s without writing results.json (train.stop_after?); the "
                "next sweep trains it again\n",
                took);
        }
    } else if ((WIFEXITED(st) && WEXITSTATUS(st) == PS_EXIT_INTERRUPTED) ||
               (WIFSIGNALED(st) && g_signals)) {
        t->stopped++;
        printf("stopped after %s; its checkpoints stay, and the next sweep resumes it\n", took);
    } else {
        t->failed++;
        p->failure = WIFEXITED(st) ? xasprintf("exit status %d", WEXITSTATUS(st))
                                   : xasprintf("killed by signal %d (%s)", WTERMSIG(st),
                                               strsignal(WTERMSIG(st)));
        printf("FAILED (%s) after %s; see %s\n", p->failure, took, log);
    }
    free(log);
    sl->k = -1;
}

// Train every unfinished point, `jobs` at a time. Returns the exit status.
static int run_points(Sweep *s, const char *exe, int jobs) {
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler = on_stop_signal;  // no SA_RESTART: poll returns at once
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGINT, &sa, &old_int) == 0 && sigaction(SIGTERM, &sa, &old_term) == 0,
          "sigaction: %s", strerror(errno));
    Slot *sl = xcalloc((size_t)jobs, sizeof(Slot));
    struct pollfd *pf = xcalloc((size_t)jobs, sizeof(struct pollfd));
    int *of = xcalloc((size_t)jobs, sizeof(int));
    for (int i = 0; i < jobs; i++) sl[i].k = -1;
    Tally t = {0};
    int next = 0, active = 0, announced = 0, passed_on = 0;
    for (;;) {
        while (!g_signals && active < jobs && next < s->n_pt) {
            Point *p = &s->pt[next++];
            if (p->finished) {
                t.skipped++;
                printf("[point %d/%d] %s: finished earlier (results.json): skipped\n", next,
                       s->n_pt, p->name);
                note_if_changed(p);
                continue;
            }
            int i = 0;
            while (sl[i].k >= 0) i++;
            start_point(s, exe, next - 1, &sl[i]);
            active++;
        }
        if (!active) break;
        if (g_signals && !announced) {
            announced = 1;
            printf(
                "sweep: %s: no new point starts; the running ones checkpoint and stop (if the "
                "signal reached the sweep alone, send it again to pass it on to them)\n",
                stop_signal_name());
        }
        if (g_signals > 1 && !passed_on) {
            passed_on = 1;
            for (int i = 0; i < jobs; i++)
                // ESRCH: it has just exited (its output is still to be read)
                if (sl[i].k >= 0 && kill(sl[i].pid, g_signal) != 0 && errno != ESRCH)
                    ps_die("cannot signal point %d (pid %ld): %s", sl[i].k + 1, (long)sl[i].pid,
                           strerror(errno));
            printf("sweep: passed %s on to the running point(s)\n", stop_signal_name());
        }
        int np = 0;
        for (int i = 0; i < jobs; i++)
            if (sl[i].k >= 0)
                pf[np] = (struct pollfd){.fd = sl[i].fd, .events = POLLIN}, of[np++] = i;
        fflush(stdout);
        // the timeout only bounds how late a signal that came just before poll is seen
        if (poll(pf, (nfds_t)np, 1000) < 0) {
            if (errno == EINTR) continue;
            ps_die("poll: %s", strerror(errno));
        }
        for (int j = 0; j < np; j++)
            if (pf[j].revents && drain(s, &sl[of[j]])) finish_point(s, &sl[of[j]], &t), active--;
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    free(sl), free(pf), free(of);

    int not_started = s->n_pt - next;
    printf("sweep: %d points: %d trained now, %d finished earlier", s->n_pt, t.trained, t.skipped);
    if (t.failed) printf(", %d FAILED", t.failed);
    if (t.stopped) printf(", %d stopped", t.stopped);
    if (t.no_results) printf(", %d without results.json", t.no_results);
    if (not_started) printf(", %d not started", not_started);
    printf("\n");
    for (int k = 0; k < s->n_pt; k++)
        if (s->pt[k].failure)
            printf("  failed: %s (%s); log %s/train.log\n", s->pt[k].name, s->pt[k].failure,
                   s->pt[k].dir);
    if (g_signals)
        printf("sweep: stopped by %s; run the same command to go on\n", stop_signal_name());
    if (t.failed) return 1;
    return g_signals || t.stopped ? PS_EXIT_INTERRUPTED : 0;
}

// ---------------------------------------------------------------------------
// The report: sweep.csv and the plots

static const char *const MODEL_FIELDS[] = {"val_loss", "val_ppl", "params", "bytes"};
#define N_MODEL_FIELDS 4

// A number of a JSON object; NaN when it has none.
static double num_field(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

// A model row's number: its own field (task NULL), or metric of one of its
// "tasks" (eval.tasks); NaN when absent.
static double model_value(const cJSON *m, const char *task, const char *metric) {
    if (!task) return num_field(m, metric);
    const cJSON *t;
    cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(m, "tasks")) {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(t, "task");
        if (cJSON_IsString(nm) && !strcmp(nm->valuestring, task)) return num_field(t, metric);
    }
    return NAN;
}

static const cJSON *find_model(const cJSON *res, const char *name) {
    const cJSON *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(res, "models")) {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(m, "name");
        if (cJSON_IsString(nm) && !strcmp(nm->valuestring, name)) return m;
    }
    return NULL;
}

// What is wrong with a parsed results.json (NULL: nothing), in buf.
static const char *results_problem(const cJSON *j, char *buf, size_t n) {
    if (!cJSON_IsObject(j)) return "not a JSON object";
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(j, "models"), *m;
    if (!cJSON_IsArray(models) || cJSON_GetArraySize(models) == 0)
        return "\"models\" must be a non-empty list";
    int i = 0;
    cJSON_ArrayForEach(m, models) {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(m, "name");
        if (!cJSON_IsString(nm) || !nm->valuestring[0])
            return snprintf(buf, n, "models[%d]: \"name\" must be a non-empty string", i), buf;
        for (int f = 0; f < N_MODEL_FIELDS; f++)
            if (isnan(num_field(m, MODEL_FIELDS[f])))
                return snprintf(buf, n, "models[%d] (%s): \"%s\" must be a number", i,
                                nm->valuestring, MODEL_FIELDS[f]),
                       buf;
        i++;
    }
    const cJSON *share = cJSON_GetObjectItemCaseSensitive(j, "share");
    if (share && !cJSON_IsObject(share)) return "\"share\" must be an object";
    if (share && (isnan(num_field(share, "ratio")) || isnan(num_field(share, "reg_weight"))))
        return "\"share\" must have the numbers \"ratio\" and \"reg_weight\"";
    const cJSON *fin = cJSON_GetObjectItemCaseSensitive(j, "final");
    if (fin && !cJSON_IsObject(fin)) return "\"final\" must be an object";
    return NULL;
}

// POINT/results.json, parsed and checked; NULL when the point has none.
static cJSON *read_results(const Point *p) {
    char *path = ps_path_join(p->dir, "results.json");
    if (access(path, F_OK) != 0) {
        free(path);
        return NULL;
    }
    char *text = ps_read_file(path, NULL), buf[256];
    if (!text) ps_die("%s", ps_err_msg());
    cJSON *j = cJSON_Parse(text);
    const char *why = j ? results_problem(j, buf, sizeof buf) : "not valid JSON";
    if (why)
        ps_die(
            "%s: %s, so it is not the results.json of a postshare train run (delete it to "
            "train the point again)",
            path, why);
    free(text);
    free(path);
    return j;
}

static void csv_field(FILE *f, const char *s) {
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static void csv_num(FILE *f, double v, const char *fmt) {
    fputc(',', f);
    if (!isnan(v)) fprintf(f, fmt, v);
}

static FILE *out_open(AtomicFile *af, const Sweep *s, const char *name) {
    char *path = ps_path_join(s->dir, name);
    FILE *f = ps_atomic_open(af, path);
    if (!f) ps_die("%s", ps_err_msg());
    free(path);
    return f;
}

static void out_commit(AtomicFile *af) {
    if (ps_atomic_commit(af) != 0) ps_die("%s", ps_err_msg());
}

// The names of the models (models: 1) or of the numbers in "final" (models:
// 0) of every results.json, in order of first appearance.
static int result_names(const Sweep *s, cJSON **res, int models, const char ***out) {
    int n = 0;
    const char **names = NULL;
    for (int k = 0; k < s->n_pt; k++) {
        if (!res[k]) continue;
        const cJSON *m;
        cJSON_ArrayForEach(m,
                           cJSON_GetObjectItemCaseSensitive(res[k], models ? "models" : "final")) {
            if (!models && !cJSON_IsNumber(m)) continue;
            const char *nm =
                models ? cJSON_GetObjectItemCaseSensitive(m, "name")->valuestring : m->string;
            int seen = 0;
            for (int i = 0; i < n && !seen; i++) seen = !strcmp(names[i], nm);
            if (seen) continue;
            names = xrealloc(names, sizeof(char *) * (size_t)(n + 1));
            names[n++] = nm;
        }
    }
    *out = names;
    return n;
}

// The task metrics of the models' "tasks" lists (eval.tasks) in every
// results.json, in order of first appearance: task[i] and metric[i].
typedef struct {
    int n;
    const char **task, **metric;
} TaskCols;
static const char *const TASK_METRICS[] = {"acc", "acc_norm", "perplexity"};

static TaskCols task_cols(const Sweep *s, cJSON **res) {
    TaskCols c = {0, NULL, NULL};
    for (int k = 0; k < s->n_pt; k++) {
        const cJSON *m, *t;
        if (!res[k]) continue;
        cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(res[k], "models"))
            cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(m, "tasks")) {
            const cJSON *nm = cJSON_GetObjectItemCaseSensitive(t, "task");
            if (!cJSON_IsString(nm)) continue;
            for (int q = 0; q < 3; q++) {
                if (!cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(t, TASK_METRICS[q]))) continue;
                int seen = 0;
                for (int i = 0; i < c.n && !seen; i++)
                    seen = !strcmp(c.task[i], nm->valuestring) && c.metric[i] == TASK_METRICS[q];
                if (seen) continue;
                c.task = xrealloc(c.task, sizeof(char *) * (size_t)(c.n + 1));
                c.metric = xrealloc(c.metric, sizeof(char *) * (size_t)(c.n + 1));
                c.task[c.n] = nm->valuestring;
                c.metric[c.n++] = TASK_METRICS[q];
            }
        }
    }
    return c;
}

// SWEEP/sweep.csv: a row per point: its name, swept values, whether it
// finished, and from its results.json each model's val loss, perplexity,
// parameters and bytes (then its task metrics, MODEL_TASK_METRIC, when the
// job named eval.tasks), and the numbers of its "final" (training losses,
// pair statistics).
static void write_csv(const Sweep *s, cJSON **res) {
    const char **models, **finals;
    int n_models = result_names(s, res, 1, &models), n_finals = result_names(s, res, 0, &finals);
    TaskCols tc = task_cols(s, res);
    AtomicFile af;
    FILE *f = out_open(&af, s, "sweep.csv");
    fputs("point", f);
    for (int a = 0; a < s->n_ax; a++) fputc(',', f), csv_field(f, s->ax[a].key);
    fputs(",status", f);
    for (int i = 0; i < n_models; i++)
        for (int c = 0; c < N_MODEL_FIELDS; c++) {
            char *col = xasprintf("%s_%s", models[i], MODEL_FIELDS[c]);
            fputc(',', f), csv_field(f, col);
            free(col);
        }
    for (int i = 0; i < n_models; i++)
        for (int c = 0; c < tc.n; c++) {
            char *col = xasprintf("%s_%s_%s", models[i], tc.task[c], tc.metric[c]);
            fputc(',', f), csv_field(f, col);
            free(col);
        }
    for (int c = 0; c < n_finals; c++) {
        char *col = xasprintf("final_%s", finals[c]);
        fputc(',', f), csv_field(f, col);
        free(col);
    }
    fputc('\n', f);
    for (int k = 0; k < s->n_pt; k++) {
        const Point *p = &s->pt[k];
        csv_field(f, p->name);
        for (int a = 0; a < s->n_ax; a++) fputc(',', f), csv_field(f, s->ax[a].val[p->vi[a]]);
        fputs(res[k] ? ",finished" : ",not finished", f);
        for (int i = 0; i < n_models; i++) {
            const cJSON *m = res[k] ? find_model(res[k], models[i]) : NULL;
            csv_num(f, num_field(m, "val_loss"), "%.6f");
            csv_num(f, num_field(m, "val_ppl"), "%.4f");
            csv_num(f, num_field(m, "params"), "%.0f");
            csv_num(f, num_field(m, "bytes"), "%.0f");
        }
        for (int i = 0; i < n_models; i++) {
            const cJSON *m = res[k] ? find_model(res[k], models[i]) : NULL;
            for (int c = 0; c < tc.n; c++)
                csv_num(f, model_value(m, tc.task[c], tc.metric[c]), "%.6g");
        }
        const cJSON *fin = res[k] ? cJSON_GetObjectItemCaseSensitive(res[k], "final") : NULL;
        for (int c = 0; c < n_finals; c++) csv_num(f, num_field(fin, finals[c]), "%.6g");
        fputc('\n', f);
    }
    out_commit(&af);
    free(models);
    free(finals);
    free(tc.task);
    free(tc.metric);
}

// Draw NAME.png from NAME.gp (which reads NAME.dat) in the sweep directory;
// gnuplot's messages go to NAME.gp.log. Returns 0, or -1 when gnuplot failed.
static int draw(const Sweep *s, const char *name) {
    char *log = xasprintf("%s/%s.gp.log", s->dir, name), *gp = xasprintf("%s.gp", name);
    int r = plot_gnuplot(s->dir, gp, log), rc = 0;
    if (r == 0) {
        printf("sweep: plot %s/%s.png\n", s->dir, name);
    } else if (r == 1) {
        printf(
            "sweep: gnuplot is not installed (apt-get install gnuplot-nox): wrote %s.dat and "
            "%s.gp in %s but no %s.png; `gnuplot %s.gp` there draws it\n",
            name, name, s->dir, name, name);
    } else {
        fprintf(stderr, "postshare: error: gnuplot failed on %s/%s (see %s): no %s.png\n", s->dir,
                gp, log, name);
        rc = -1;
    }
    free(log);
    free(gp);
    return rc;
}

static void dat_num(FILE *f, double v) {
    if (isnan(v))
        fputs(" ?", f);
    else
        fprintf(f, " %.9g", v);
}

typedef struct {
    double x, ppl[4];  // share.reg_weight; perplexities of the models in PPL_MODELS
} PplRow;
static const char *const PPL_MODELS[] = {"postshare", "directshare", "posttrained", "start"};

static int cmp_row(const void *a, const void *b) {
    double x = ((const PplRow *)a)->x, y = ((const PplRow *)b)->x;
    return (x > y) - (x < y);
}

// The curve label of a point in the perplexity plot: its swept values but
// share.reg.weight (the x axis), or else its share.ratio.
static char *ppl_label(const Sweep *s, const Point *p, const cJSON *res) {
    char *label = values_text(s, p, " ", REG_WEIGHT_KEY);
    if (label[0]) return label;
    free(label);
    return xasprintf("share.ratio=%g",
                     num_field(cJSON_GetObjectItemCaseSensitive(res, "share"), "ratio"));
}

// (a) ppl_vs_reg_weight.png: the perplexity after sharing against
// share.reg.weight, a line per curve label (the other swept values), with
// DirectShare, the post-trained unshared model and the start model dashed.
// The same plot of a task metric (task non-NULL: TASK_METRIC_vs_reg_weight.png).
static int plot_ppl(const Sweep *s, cJSON **res, const char *task, const char *metric) {
    char *name =
        task ? xasprintf("%s_%s_vs_reg_weight", task, metric) : xasprintf("ppl_vs_reg_weight");
    char *what = task ? xasprintf("%s %s", task, metric) : xasprintf("val perplexity");
    int n_groups = 0, *group = xcalloc((size_t)s->n_pt, sizeof(int));
    char **labels = xcalloc((size_t)s->n_pt, sizeof(char *));
    for (int k = 0; k < s->n_pt; k++) {
        group[k] = -1;
        if (!res[k] || !cJSON_GetObjectItemCaseSensitive(res[k], "share") ||
            !find_model(res[k], "postshare"))
            continue;
        char *l = ppl_label(s, &s->pt[k], res[k]);
        int g = 0;
        while (g < n_groups && strcmp(labels[g], l)) g++;
        if (g == n_groups)
            labels[n_groups++] = l;
        else
            free(l);
        group[k] = g;
    }
    int rc = 0;
    if (!n_groups) {
        printf(
            "sweep: no point has PostShare results yet (a share section and results.json): no "
            "%s.png\n",
            name);
    } else {
        // the data: a block per curve label, rows by share.reg.weight; which
        // reference models have any value (gnuplot stops at a column with none)
        AtomicFile af;
        char *file = xasprintf("%s.dat", name);
        FILE *f = out_open(&af, s, file);
        free(file);
        PplRow *rows = xcalloc((size_t)s->n_pt, sizeof(PplRow));
        int *has = xcalloc((size_t)n_groups * 4, sizeof(int));
        double lo = INFINITY, hi = 0;  // of every perplexity plotted
        fprintf(f, "# share.reg_weight, then %s of: postshare directshare posttrained start\n",
                what);
        for (int g = 0; g < n_groups; g++) {
            int n = 0;
            for (int k = 0; k < s->n_pt; k++) {
                if (group[k] != g) continue;
                rows[n].x =
                    num_field(cJSON_GetObjectItemCaseSensitive(res[k], "share"), "reg_weight");
                for (int m = 0; m < 4; m++) {
                    rows[n].ppl[m] = model_value(find_model(res[k], PPL_MODELS[m]), task,
                                                 task ? metric : "val_ppl");
                    double v = rows[n].ppl[m];
                    has[g * 4 + m] |= !isnan(v);
                    if (v < lo) lo = v;
                    if (v > hi) hi = v;
                }
                n++;
            }
            qsort(rows, (size_t)n, sizeof(PplRow), cmp_row);
            fprintf(f, "# %s\n", labels[g]);
            for (int i = 0; i < n; i++) {
                fprintf(f, "%.9g", rows[i].x);
                for (int m = 0; m < 4; m++) dat_num(f, rows[i].ppl[m]);
                fputc('\n', f);
            }
            fputs("\n\n", f);  // gnuplot: the next block is the next `index`
        }
        out_commit(&af);
        int log_y = (!task || !strcmp(metric, "perplexity")) && lo > 0 && hi > 10 * lo;
        file = xasprintf("%s.gp", name);
        f = out_open(&af, s, file);
        free(file);
        fprintf(f,
                "set terminal pngcairo size 1200,650 noenhanced\n"
                "set output '%s.png'\n"
                "set title '%s after sharing vs. share.reg.weight'\n"
                "set xlabel 'share.reg.weight'\nset ylabel '%s%s'\n"
                "set grid\nset datafile missing '?'\nset offsets 0, 0, graph 0.05, graph 0.05\n"
                "set lmargin at screen 0.07\nset rmargin at screen 0.64\n"
                "set key at screen 0.99, graph 1 right top\n",
                name, what, what, log_y ? " (log scale)" : "");
        // perplexities an order of magnitude apart (a poor DirectShare) are read on a log scale
        if (log_y) fputs("set logscale y\nset autoscale yfix\n", f);
        fputs("plot", f);
        const char *sep = " ";
        static const char *const style[] = {"linespoints lw 2 pt 7", "linespoints dt 2 pt 6",
                                            "linespoints dt 3 pt 4"};
        static const char *const what[] = {"postshare", "directshare", "posttrained (unshared)"};
        int any_start = 0;
        for (int g = 0; g < n_groups; g++) {
            for (int m = 0; m < 3; m++) {
                if (!has[g * 4 + m]) continue;
                fprintf(f, "%s'%s.dat' index %d using 1:%d with %s lc %d title ", sep, name, g,
                        m + 2, style[m], g + 1);
                char *t = xasprintf("%s %s", what[m], labels[g]);
                gp_string(f, t);
                free(t);
                sep = ", \\\n     ";
            }
            any_start |= has[g * 4 + 3];
        }
        if (any_start)
            fprintf(f,
                    "%s'%s.dat' using 1:5 with lines dt 4 lw 2 lc rgb 'black' title 'start "
                    "(unshared)'",
                    sep, name);
        fputc('\n', f);
        out_commit(&af);
        rc = draw(s, name);
        free(rows);
        free(has);
    }
    for (int g = 0; g < n_groups; g++) free(labels[g]);
    free(labels);
    free(group);
    free(name);
    free(what);
    return rc;
}

// A point's training losses from its metrics.jsonl: lm_loss (or, from runs
// without PostShare, loss) and reg_loss against step.
typedef struct {
    int n, cap;
    double *step, *lm, *reg;
    int has_lm_key, has_reg;
} Curve;

static void read_curve(const Point *p, Curve *c) {
    memset(c, 0, sizeof *c);
    char *path = ps_path_join(p->dir, "metrics.jsonl");
    FILE *f = fopen(path, "r");
    free(path);
    if (!f) return;  // not started yet
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        cJSON *o = cJSON_Parse(line);
        if (!o) continue;  // a line cut by a crash (the resumed run drops it too)
        double step = num_field(o, "step"), lm = num_field(o, "lm_loss");
        double reg = num_field(o, "reg_loss");
        c->has_lm_key |= !isnan(lm);
        if (isnan(lm)) lm = num_field(o, "loss");
        if (!isnan(step) && !isnan(lm)) {
            if (c->n == c->cap) {
                c->cap = 2 * c->cap + 64;
                c->step = xrealloc(c->step, sizeof(double) * (size_t)c->cap);
                c->lm = xrealloc(c->lm, sizeof(double) * (size_t)c->cap);
                c->reg = xrealloc(c->reg, sizeof(double) * (size_t)c->cap);
            }
            c->step[c->n] = step, c->lm[c->n] = lm, c->reg[c->n] = reg;
            c->has_reg |= !isnan(reg);
            c->n++;
        }
        cJSON_Delete(o);
    }
    free(line);
    fclose(f);
}

// (b) loss_curves.png: lm_loss (above) and reg_loss (below, when any run
// logs it) against step, a line per point.
static int plot_losses(const Sweep *s) {
    const char *name = "loss_curves";
    Curve *cv = xcalloc((size_t)s->n_pt, sizeof(Curve));
    int n_curves = 0, has_lm_key = 0, has_reg = 0;
    for (int k = 0; k < s->n_pt; k++) {
        read_curve(&s->pt[k], &cv[k]);
        n_curves += cv[k].n > 0;
        has_lm_key |= cv[k].has_lm_key;
        has_reg |= cv[k].has_reg;
    }
    int rc = 0;
    if (!n_curves) {
        printf("sweep: no point has logged training losses yet: no %s.png\n", name);
    } else {
        AtomicFile af;
        FILE *f = out_open(&af, s, "loss_curves.dat");
        fprintf(f, "# a block per point: step %s reg_loss\n", has_lm_key ? "lm_loss" : "loss");
        int *index = xcalloc((size_t)s->n_pt, sizeof(int)), b = 0;
        for (int k = 0; k < s->n_pt; k++) {
            if (!cv[k].n) continue;
            index[k] = b++;
            fprintf(f, "# %s\n", s->pt[k].name);
            for (int i = 0; i < cv[k].n; i++) {
                fprintf(f, "%.9g", cv[k].step[i]);
                dat_num(f, cv[k].lm[i]);
                dat_num(f, cv[k].reg[i]);
                fputc('\n', f);
            }
            fputs("\n\n", f);
        }
        out_commit(&af);
        f = out_open(&af, s, "loss_curves.gp");
        fprintf(f,
                "set terminal pngcairo size 1200,%d noenhanced\nset output '%s.png'\n"
                "set grid\nset datafile missing '?'\nset xlabel 'step'\n"
                // the same plot width in both panels; the key (of the first) right of them
                "set lmargin at screen 0.07\nset rmargin at screen 0.64\n"
                "set key at screen 0.99, graph 1 right top\n",
                has_reg ? 900 : 550, name);
        if (has_reg) fprintf(f, "set multiplot layout 2,1 title 'Training losses of the sweep'\n");
        for (int panel = 0; panel < 1 + has_reg; panel++) {
            const char *y = panel ? "reg_loss" : has_lm_key ? "lm_loss" : "loss";
            if (!has_reg) fprintf(f, "set title 'Training loss of the sweep'\n");
            fprintf(f, "set ylabel '%s'\nplot", y);
            const char *sep = " ";
            for (int k = 0; k < s->n_pt; k++) {
                if (!cv[k].n || (panel && !cv[k].has_reg)) continue;
                // the same color for a point in both panels
                fprintf(f, "%s'%s.dat' index %d using 1:%d with lines lw 1.5 lc %d %s", sep, name,
                        index[k], panel + 2, k + 1, panel ? "notitle" : "title ");
                if (!panel) gp_string(f, s->pt[k].name);
                sep = ", \\\n     ";
            }
            fputc('\n', f);
        }
        if (has_reg) fprintf(f, "unset multiplot\n");
        out_commit(&af);
        rc = draw(s, name);
        free(index);
    }
    for (int k = 0; k < s->n_pt; k++) free(cv[k].step), free(cv[k].lm), free(cv[k].reg);
    free(cv);
    return rc;
}

// Collect every point's results (all read and checked before anything is
// written) into sweep.csv and the plots. Returns the exit status.
static int report(const Sweep *s) {
    cJSON **res = xcalloc((size_t)s->n_pt, sizeof(cJSON *));
    int n_res = 0;
    for (int k = 0; k < s->n_pt; k++) n_res += (res[k] = read_results(&s->pt[k])) != NULL;
    if (ps_mkdirs(s->dir) != 0) ps_die("%s", ps_err_msg());
    write_csv(s, res);
    printf("sweep: %s/sweep.csv: %d points, %d with results\n", s->dir, s->n_pt, n_res);
    int rc = plot_ppl(s, res, NULL, NULL);
    // a plot per task of eval.tasks: acc_norm where the task has it, else acc
    TaskCols tc = task_cols(s, res);
    for (int c = 0; c < tc.n; c++) {
        int has_norm = 0;
        for (int d = 0; d < tc.n; d++)
            has_norm |= !strcmp(tc.task[d], tc.task[c]) && !strcmp(tc.metric[d], "acc_norm");
        if (!strcmp(tc.metric[c], has_norm ? "acc_norm" : "acc"))
            rc |= plot_ppl(s, res, tc.task[c], tc.metric[c]);
    }
    free(tc.task);
    free(tc.metric);
    rc |= plot_losses(s);
    for (int k = 0; k < s->n_pt; k++) cJSON_Delete(res[k]);
    free(res);
    return rc ? 1 : 0;
}

// ---------------------------------------------------------------------------
// The command

enum { MODE_RUN, MODE_DRY_RUN, MODE_PRINT_COMMANDS, MODE_REPORT };

static void set_mode(int *mode, int m, const char *opt, const char **mode_opt) {
    if (*mode != MODE_RUN && *mode != m)
        ps_die("sweep: %s and %s cannot be combined (see postshare sweep --help)", *mode_opt, opt);
    *mode = m;
    *mode_opt = opt;
}

int sweep_main(int argc, char **argv) {
    const char *config = NULL, *mode_opt = NULL;
    char **sets = xcalloc((size_t)argc + 1, sizeof(char *));
    int n_sets = 0, jobs = 1, mode = MODE_RUN;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            free(sets);
            return 0;
        } else if ((!strcmp(a, "--set") || !strcmp(a, "--jobs")) && i + 1 >= argc) {
            ps_die("sweep: %s needs a value (see postshare sweep --help)", a);
        } else if (!strcmp(a, "--set")) {
            sets[n_sets++] = argv[++i];
        } else if (!strcmp(a, "--jobs")) {
            jobs = (int)cli_int("sweep", "--jobs", argv[++i], 1, 256);
        } else if (!strncmp(a, "--set=", 6)) {
            sets[n_sets++] = argv[i] + 6;
        } else if (!strncmp(a, "--jobs=", 7)) {
            jobs = (int)cli_int("sweep", "--jobs", a + 7, 1, 256);
        } else if (!strcmp(a, "--dry-run")) {
            set_mode(&mode, MODE_DRY_RUN, a, &mode_opt);
        } else if (!strcmp(a, "--print-commands")) {
            set_mode(&mode, MODE_PRINT_COMMANDS, a, &mode_opt);
        } else if (!strcmp(a, "--report")) {
            set_mode(&mode, MODE_REPORT, a, &mode_opt);
        } else {
            cli_positional("sweep", a, &config, "config file");
        }
    }
    if (!config) {
        usage(stderr);
        ps_die("sweep: no config file given");
    }
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n < 0) ps_die("sweep: cannot find this program (/proc/self/exe): %s", strerror(errno));
    exe[n] = 0;

    Sweep s = {.path = config, .sets = sets, .n_sets = n_sets};
    s.text = ps_read_file(config, NULL);
    if (!s.text) ps_die("%s", ps_err_msg());
    parse_sweep_section(&s);
    check_axis_keys(&s);
    check_values(&s);
    find_sweep_dir(&s);
    make_points(&s);
    int n_fin = 0;
    for (int k = 0; k < s.n_pt; k++) n_fin += s.pt[k].finished;
    // --print-commands keeps stdout for the commands alone
    FILE *info = mode == MODE_PRINT_COMMANDS ? stderr : stdout;
    fprintf(info, "sweep: %s: %d points (", config, s.n_pt);
    for (int a = 0; a < s.n_ax; a++)
        fprintf(info, "%s%s: %d value%s", a ? " x " : "", s.ax[a].key, s.ax[a].n,
                s.ax[a].n > 1 ? "s" : "");
    fprintf(info, "), %d finished, in %s\n", n_fin, s.dir);

    int status = 0;
    if (mode == MODE_DRY_RUN) {
        list_points(&s);
    } else if (mode == MODE_PRINT_COMMANDS) {
        print_commands(&s, exe);
    } else if (mode == MODE_REPORT) {
        status = report(&s);
    } else {
        if (jobs > 1 && s.threads == 0)
            printf(
                "sweep: note: --jobs %d with threads 0: every point uses all the cores; "
                "--set threads=N shares them\n",
                jobs);
        int lock = lock_sweep_dir(&s);
        status = run_points(&s, exe, jobs);
        int rs = report(&s);
        if (!status) status = rs;
        CHECK(close(lock) == 0, "closing the sweep lock: %s", strerror(errno));
    }
    sweep_free(&s);
    free(sets);
    return status;
}
