// jsonio.c: strict JSON parsing on top of cJSON (see jsonio.h).
#include "jsonio.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"

static int cmp_key(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int str_ok(const char *s, const char *what, const char *where, const char *kind) {
    if (ps_utf8_valid(s, strlen(s))) return 0;
    return ps_err_set("%s: invalid UTF-8 in %s%s%s", what, kind, where[0] ? " of " : "", where);
}

// Check one subtree: UTF-8 of every key and string, no key twice in one object.
// (cJSON's nesting limit bounds the recursion.)
static int check(const cJSON *o, const char *what, const char *where) {
    if (cJSON_IsString(o) && o->valuestring) return str_ok(o->valuestring, what, where, "a string");
    if (!cJSON_IsObject(o) && !cJSON_IsArray(o)) return 0;
    int n = 0;
    for (const cJSON *e = o->child; e; e = e->next) {
        if (e->string && str_ok(e->string, what, where, "a key")) return -1;
        if (check(e, what, e->string ? e->string : where)) return -1;
        n++;
    }
    if (!cJSON_IsObject(o) || n < 2) return 0;
    const char **keys = xmalloc(sizeof *keys * (size_t)n);
    int k = 0;
    for (const cJSON *e = o->child; e; e = e->next) keys[k++] = e->string ? e->string : "";
    qsort(keys, (size_t)n, sizeof *keys, cmp_key);
    int rc = 0;
    for (int i = 1; i < n && !rc; i++)
        if (strcmp(keys[i - 1], keys[i]) == 0)
            rc = ps_err_set("%s: duplicate key: '%s' appears twice%s%s%s (which value is meant?)",
                            what, keys[i], where[0] ? " in \"" : " at the top level",
                            where[0] ? where : "", where[0] ? "\"" : "");
    free(keys);
    return rc;
}

cJSON *ps_json_parse(const char *txt, size_t len, const char *what) {
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(txt, len, &end, 0);
    if (!root) {
        const char *ep = cJSON_GetErrorPtr();
        long at = (ep && ep >= txt && ep <= txt + len) ? (long)(ep - txt) : -1;
        ps_err_set("%s: not valid JSON (error near byte %ld)", what, at);
        return NULL;
    }
    for (const char *q = end; q && q < txt + len; q++) {
        if (*q != ' ' && *q != '\n' && *q != '\r' && *q != '\t' && *q != 0) {
            ps_err_set("%s: not valid JSON: unexpected text after the value at byte %ld", what,
                       (long)(q - txt));
            cJSON_Delete(root);
            return NULL;
        }
    }
    if (check(root, what, "")) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

int ps_json_write(const char *path, const cJSON *root) {
    char *txt = cJSON_Print(root);
    CHECK(txt, "cJSON_Print failed");
    size_t n = strlen(txt);
    txt = xrealloc(txt, n + 2);
    txt[n] = '\n';
    txt[n + 1] = 0;
    int rc = ps_write_file_atomic(path, txt, n + 1);
    free(txt);
    return rc;
}
