// fuzz_job: a YAML job config plus --set overrides. The input is the YAML text, then
// optionally a line "#--set" followed by one assignment per line.
#include "fuzz_util.h"
#include "job.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    char *s = fuzz_str(d, n);
    char *sets[16];
    int ns = 0;
    char *mark = strstr(s, "#--set\n");
    if (mark) {
        *mark = 0;
        char *p = mark + 7;
        while (*p && ns < 16) {
            sets[ns++] = p;
            char *nl = strchr(p, '\n');
            if (!nl) break;
            *nl = 0;
            p = nl + 1;
        }
    }
    JobConfig cfg;
    if (job_load_string(s, "job.yaml", ns, sets, &cfg) == 0) {
        char *y = job_to_yaml(&cfg);  // what a checkpoint stores must read back
        JobConfig back;
        if (job_load_string(y, "ckpt:/config", 0, NULL, &back) != 0) abort();
        free(y);
    }
    free(s);
    return 0;
}
