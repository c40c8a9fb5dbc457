#!/usr/bin/env python3
"""A tiny LLaMA GGUF and its transformers reference, for tests/test_gguf_model.c.

A random LlamaForCausalLM (GQA, untied, head_dim 16) is written as GGUF v3 with the
`gguf` package the way llama.cpp's convert_hf_to_gguf.py lays it out (llama.* metadata,
llama.cpp tensor names, q/k rows permuted for llama.cpp's RoPE), one tensor type per
group so that every supported type is read: token_embd Q8_0, attn_q/attn_k Q4_0,
attn_v/attn_output Q4_1, ffn_gate F16, ffn_up BF16, ffn_down Q8_0, norms F32,
output Q4_1. transformers then loads the GGUF file itself (from_pretrained(dir,
gguf_file=...): its own dequantization and q/k un-permutation) and gives the float64
reference logits of a fixed batch:

  tests/fixtures/gguf_tiny/model.gguf
  tests/fixtures/gguf_tiny/reference.safetensors: tokens I32 [B,T], logits F32 [B,T,V]

Not part of CI (needs torch, transformers, gguf, numpy):
    /work/xvenv/bin/python tests/make_gguf_fixture.py
"""
import os
import sys

import numpy as np
import torch
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter, quants
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "gguf_tiny")
C, L, NH, NKV, HD, F, V = 64, 2, 4, 2, 16, 128, 96


def permute(w, n_head):  # convert_hf_to_gguf.py's LlamaModel.permute
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def main():
    torch.manual_seed(7)
    cfg = LlamaConfig(hidden_size=C, num_hidden_layers=L, num_attention_heads=NH,
                      num_key_value_heads=NKV, head_dim=HD, intermediate_size=F, vocab_size=V,
                      max_position_embeddings=128, rms_norm_eps=1e-5, tie_word_embeddings=False,
                      rope_parameters=dict(rope_type="default", rope_theta=10000.0),
                      initializer_range=0.2)
    model = LlamaForCausalLM(cfg).float()
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "model.gguf")
    w = GGUFWriter(path, "llama")
    w.add_name("gguf_tiny")
    w.add_context_length(128)
    w.add_embedding_length(C)
    w.add_block_count(L)
    w.add_feed_forward_length(F)
    w.add_head_count(NH)
    w.add_head_count_kv(NKV)
    w.add_key_length(HD)
    w.add_value_length(HD)
    w.add_rope_dimension_count(HD)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(V)
    w.add_file_type(7)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(V)])
    w.add_token_types([1] * V)

    def put(name, arr, qt):
        if qt in (Q.F32, Q.F16):
            w.add_tensor(name, arr.astype(np.float32 if qt == Q.F32 else np.float16))
        else:
            data = quants.quantize(arr, qt)
            w.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qt)

    put("token_embd.weight", sd["model.embed_tokens.weight"], Q.Q8_0)
    for i in range(L):
        p = f"model.layers.{i}."
        put(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"], Q.F32)
        put(f"blk.{i}.attn_q.weight", permute(sd[p + "self_attn.q_proj.weight"], NH), Q.Q4_0)
        put(f"blk.{i}.attn_k.weight", permute(sd[p + "self_attn.k_proj.weight"], NKV), Q.Q4_0)
        put(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"], Q.Q4_1)
        put(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"], Q.Q4_1)
        put(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"], Q.F32)
        put(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"], Q.F16)
        put(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"], Q.BF16)
        put(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"], Q.Q8_0)
    put("output_norm.weight", sd["model.norm.weight"], Q.F32)
    put("output.weight", sd["lm_head.weight"], Q.Q4_1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    ref_model = AutoModelForCausalLM.from_pretrained(OUT, gguf_file="model.gguf",
                                                     dtype=torch.float32).double().eval()
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, V, (2, 20), generator=g)
    with torch.no_grad():
        logits = ref_model(input_ids=tokens).logits
    save_file({"tokens": tokens.to(torch.int32).contiguous(),
               "logits": logits.float().contiguous()},
              os.path.join(OUT, "reference.safetensors"))
    print(f"{path}: {os.path.getsize(path)} bytes; logits |max| {logits.abs().max():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
