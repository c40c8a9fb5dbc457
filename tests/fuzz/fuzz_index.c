// fuzz_index: the model.safetensors.index.json of a sharded HF model (hf_load). The
// folder holds a small fixed model in two shards, a.safetensors (embedding, layer 0)
// and b.safetensors (the rest); the input is the index.
#include "fuzz_util.h"
#include "hf_io.h"
#include "safetensors.h"

static const char CONFIG[] =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", "
    "\"hidden_size\": 8, \"intermediate_size\": 16, \"num_hidden_layers\": 2, "
    "\"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"vocab_size\": 16, "
    "\"max_position_embeddings\": 32, \"tie_word_embeddings\": true}";

static char g_dir[300];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    snprintf(g_dir, sizeof g_dir, "%s/model", fuzz_dir());
    if (ps_mkdirs(g_dir) != 0) abort();
    char path[400];
    snprintf(path, sizeof path, "%s/config.json", g_dir);
    if (ps_write_file_atomic(path, CONFIG, sizeof CONFIG - 1) != 0) abort();
    LlamaConfig cfg;
    if (hf_read_config(path, &cfg) != 0) abort();
    HostWeights w;
    param_table_build(&w.t, &cfg);
    w.params = calloc(w.t.total, sizeof(float));
    StWriteTensor *t = calloc((size_t)w.t.n, sizeof *t);
    int n = hf_tensor_list(&w, ST_F32, t), half = 1 + 9;  // embedding + layer 0
    snprintf(path, sizeof path, "%s/a.safetensors", g_dir);
    if (st_write(path, half, t) != 0) abort();
    snprintf(path, sizeof path, "%s/b.safetensors", g_dir);
    if (st_write(path, n - half, t + half) != 0) abort();
    free(t);
    host_weights_free(&w);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    char path[400];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", g_dir);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(d, 1, n, f) != n) || fclose(f) != 0) abort();
    HostWeights w;
    if (hf_load(g_dir, &w) == 0) host_weights_free(&w);
    return 0;
}
