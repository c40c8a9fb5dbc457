// fuzz_plan: a sharing plan's JSON (share_plan_parse), then the checks against its own
// model and the shared parameter table it implies.
#include "fuzz_util.h"
#include "params.h"
#include "share.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    char *s = fuzz_str(d, n);
    SharePlan p;
    if (share_plan_parse(s, "plan.json", &p) == 0) {
        if (share_plan_check(&p, &p.cfg, NULL, 0, "plan.json") == 0) {
            ParamTable t;
            FUZZ_CALL(param_table_build_shared(&t, &p.cfg, &p); param_table_free(&t));
        }
        share_plan_free(&p);
    }
    free(s);
    return 0;
}
