// fuzz_tasks: the task data readers of tasks.c (docs/tasks.md). The first byte picks
// the reader, the rest is its file:
//   0 piqa (JSONL; the labels file follows the first NUL byte), 1 hellaswag,
//   2 lambada, 3 a user JSONL task (query/choices/gold), 4 mmlu (the zip),
//   5 a task-definition file (task_defs_load), then its first row loaded from a
//     fixed valid JSONL file.
// An accepted task is cut to a seeded subset (task_subset) and freed.
#include "fuzz_util.h"
#include "tasks.h"

static const char JSONL_OK[] = "{\"query\": \"q\", \"choices\": [\"a\", \"b\"], \"gold\": 1}\n";

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    if (n < 1) return 0;
    int which = d[0] % 6;
    d++, n--;
    TaskDef def;
    const char *dir = fuzz_dir();
    switch (which) {
        case 0: {
            def = *task_find("piqa");
            const uint8_t *nul = memchr(d, 0, n);
            size_t k = nul ? (size_t)(nul - d) : n;
            fuzz_file(d, k, "piqa.jsonl");
            fuzz_file(nul ? nul + 1 : d, nul ? n - k - 1 : 0, "piqa.lst");
            strcpy(def.file, "piqa.jsonl");
            strcpy(def.labels, "piqa.lst");
            break;
        }
        case 1:
        case 2:
            def = *task_find(which == 1 ? "hellaswag" : "lambada");
            fuzz_file(d, n, "data.jsonl");
            strcpy(def.file, "data.jsonl");
            break;
        case 3:
            memset(&def, 0, sizeof def);
            strcpy(def.name, "fz");
            def.fmt = TASK_FMT_JSONL;
            strcpy(def.delim, " ");
            def.metrics = TASK_M_ACC | TASK_M_ACC_NORM;
            fuzz_file(d, n, "user.jsonl");
            strcpy(def.file, "user.jsonl");
            break;
        case 4:
            def = *task_find("mmlu");
            fuzz_file(d, n, "mmlu.zip");
            strcpy(def.file, "mmlu.zip");
            break;
        default: {
            fuzz_file((const uint8_t *)JSONL_OK, sizeof JSONL_OK - 1, "ok.jsonl");
            const char *p = fuzz_file(d, n, "tasks.json");
            int n0 = task_count(), rc = task_defs_load(p);
            if (rc == 0 && task_count() > n0) {
                def = *task_def_at(n0);  // the first row of the file
                strcpy(def.file, "ok.jsonl");
            }
            task_defs_reset();
            if (rc != 0 || task_count() == n0) return 0;
            break;
        }
    }
    for (int shots = 0; shots <= (which == 4 ? 2 : 0); shots += 2) {
        Task t;
        if (task_load(&def, dir, shots, &t) == 0) {
            task_subset(&t, 2, 1 + (uint64_t)n);
            task_free(&t);
        }
    }
    return 0;
}
