// main.c: the `postshare` command line: dispatches to the subcommands.
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "convertcmd.h"
#include "evalcmd.h"
#include "generate.h"
#include "inspect.h"
#include "prepare.h"
#include "sharecmd.h"
#include "sweep.h"
#include "tokcmd.h"
#include "train.h"

static void usage(FILE *f) {
    fprintf(f,
            "postshare %s: post-training that shares attention weights between heads of LLaMA "
            "models\n\n"
            "usage: postshare COMMAND [ARGS]\n\n"
            "commands:\n"
            "  train CONFIG.yaml [--set k=v]   train or post-train a model from a job config\n"
            "  sweep CONFIG.yaml [--set k=v]   one train run per point of a sweep, then a report\n"
            "  prepare --tokenizer SPEC --out DIR FILE...   tokenize text into token shards\n"
            "  eval MODEL --data GLOB          validation loss and perplexity of a model\n"
            "  generate MODEL --tokenizer SPEC  greedy (or sampled) text generation\n"
            "  tokenize --tokenizer SPEC FILE...  print the token ids of text\n"
            "  match MODEL -o PLAN.json        match heads across layers, choose a sharing plan\n"
            "  share MODEL --plan PLAN.json -o OUT  apply a plan (DirectShare): compact model\n"
            "  calibrate MODEL --data GLOB -o FILE  activation Grams for match/share (calib)\n"
            "  convert MODEL -o DIR            write any model as an HF directory\n"
            "  inspect CKPT.h5                 summarize a checkpoint and verify its checksums\n"
            "  version                         print the version\n\n"
            "MODEL is hf:DIR, llama2c:FILE.bin, gguf:FILE.gguf, shared:DIR, or a path\n"
            "(directory = HF or a compact shared model, *.bin = llama2.c, *.gguf = GGUF), or\n"
            "ckpt:FILE / FILE.h5 (a checkpoint's weights).\n"
            "Run 'postshare COMMAND --help' for a command's options.\n",
            PS_VERSION);
}

// Two settings that OpenMP and OpenBLAS read once, when they load (before main),
// so they are set here and the program starts itself again, once:
// - OpenMP threads that spin while they wait for work collapse on a shared
//   machine: a waiting thread burns the time slice the working one needs, and
//   on 2 busy cores a parallel region can cost a scheduler tick. So unless the
//   user chose a wait policy, OMP_WAIT_POLICY=passive, with a short spin first
//   (GOMP_SPINCOUNT=1000, microseconds): regions that follow each other closely
//   (generate's ~200 matrix-vector products per token) find their threads still
//   awake, while a thread that waits longer sleeps and yields its core. Sleeping
//   at once made a cached 256-token generation of SmolLM2's shape 9.4 s on 2
//   quiet cores (futex wake-ups; no faster than 1 thread), the short spin 5.3 s.
// - OpenBLAS picks its kernels from the CPU model; a model newer than the
//   library (OpenBLAS 0.3.21 on a 2024 Xeon) gets the generic Prescott (SSE3)
//   kernels: sgemm 4.6x slower there. Unless OPENBLAS_CORETYPE is set, such a
//   CPU gets the kernels its instruction set supports (SkylakeX: AVX-512,
//   Haswell: AVX2 + FMA).
static int openblas_core_fix(void) {
    if (getenv("OPENBLAS_CORETYPE") || strcmp(openblas_get_corename(), "Prescott")) return 0;
    __builtin_cpu_init();
    const char *core = NULL;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        core = "SkylakeX";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        core = "Haswell";
    if (core) setenv("OPENBLAS_CORETYPE", core, 1);
    return core != NULL;
}

static void runtime_setup(char **argv) {
    int again = openblas_core_fix();
    if (!getenv("OMP_WAIT_POLICY")) {
        setenv("OMP_WAIT_POLICY", "passive", 1);
        if (!getenv("GOMP_SPINCOUNT")) setenv("GOMP_SPINCOUNT", "1000", 1);
        again = 1;
    }
    if (!again) return;
    // the program's own path (not /proc/self/exe, which would rename the process "exe")
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return;
    self[n] = '\0';
    execv(self, argv);  // on failure: go on as we are
}

int main(int argc, char **argv) {
    runtime_setup(argv);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    int sub_argc = argc - 2;
    char **sub_argv = argv + 2;
    if (!strcmp(cmd, "train")) return train_main(sub_argc, sub_argv);
    if (!strcmp(cmd, "sweep")) return sweep_main(sub_argc, sub_argv);
    if (!strcmp(cmd, "prepare")) return prepare_main(argc - 1, argv + 1);  // argv[0] = "prepare"
    if (!strcmp(cmd, "eval")) return evalcmd_main(sub_argc, sub_argv);
    if (!strcmp(cmd, "generate")) return generate_main(sub_argc, sub_argv);
    if (!strcmp(cmd, "tokenize")) return tokenize_main(sub_argc, sub_argv);
    if (!strcmp(cmd, "inspect")) return inspect_main(sub_argc, sub_argv);
    if (!strcmp(cmd, "convert")) return convertcmd_main(sub_argc, sub_argv);
    if (!strcmp(cmd, "match")) return matchcmd_main(sub_argc, sub_argv);
    if (!strcmp(cmd, "share")) return sharecmd_main(sub_argc, sub_argv);
    if (!strcmp(cmd, "calibrate")) return calibcmd_main(sub_argc, sub_argv);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("postshare %s\n", PS_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
        usage(stdout);
        return 0;
    }
    usage(stderr);
    fprintf(stderr, "postshare: error: unknown command '%s'\n", cmd);
    return 2;
}
