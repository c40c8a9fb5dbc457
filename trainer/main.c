// main.c: the `postshare` command line: dispatches to the subcommands.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "evalcmd.h"
#include "generate.h"
#include "inspect.h"
#include "prepare.h"
#include "sharecmd.h"
#include "sweep.h"
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
            "  match MODEL -o PLAN.json        match heads across layers, choose a sharing plan\n"
            "  share MODEL --plan PLAN.json -o OUT  apply a plan (DirectShare): compact model\n"
            "  inspect CKPT.h5                 summarize a checkpoint and verify its checksums\n"
            "  version                         print the version\n\n"
            "MODEL is hf:DIR, llama2c:FILE.bin, shared:DIR, or a path (directory = HF or a\n"
            "compact shared model, *.bin = llama2.c), or ckpt:FILE / FILE.h5 (a checkpoint's\n"
            "weights).\n"
            "Run 'postshare COMMAND --help' for a command's options.\n",
            PS_VERSION);
}

// OpenMP threads that spin while they wait for work collapse on a shared
// machine: a waiting thread burns the time slice the working one needs, and on
// 2 busy cores a parallel region can cost a scheduler tick. So unless the user
// chose a wait policy, run with OMP_WAIT_POLICY=passive (threads sleep at once;
// no loss measured on a quiet machine). libgomp reads the variable once, when
// it loads, before main: so set it and start the program again, once.
static void passive_openmp(char **argv) {
    if (getenv("OMP_WAIT_POLICY")) return;
    setenv("OMP_WAIT_POLICY", "passive", 1);
    execv("/proc/self/exe", argv);  // on failure: go on with the default policy
}

int main(int argc, char **argv) {
    passive_openmp(argv);
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
    if (!strcmp(cmd, "inspect")) return inspect_main(sub_argc, sub_argv);
    if (!strcmp(cmd, "match")) return matchcmd_main(sub_argc, sub_argv);
    if (!strcmp(cmd, "share")) return sharecmd_main(sub_argc, sub_argv);
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
