#!/usr/bin/env python3
"""Dequantize SmolLM2-135M-Instruct (Q4_1 GGUF) into an fp32 HF folder.

usage: convert_gguf.py GGUF_DIR GGUF_FILE OUT_DIR

The fallback of run.sh while postshare cannot read the GGUF itself: transformers
(with torch, gguf and accelerate) loads the GGUF, dequantized and with its q/k
rows back in HF order; this writes config.json, model.safetensors (fp32) and
the tokenizer (tokenizer.json) for tokenize_wikitext.py.
"""
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from safetensors.torch import save_file

d, f, out = sys.argv[1], sys.argv[2], sys.argv[3]
AutoTokenizer.from_pretrained(d, gguf_file=f).save_pretrained(out)
m = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
c = m.config
sd = {k: v.detach().contiguous().float() for k, v in m.state_dict().items()}
if c.tie_word_embeddings:
    sd.pop("lm_head.weight", None)
save_file(sd, out + "/model.safetensors", metadata={"format": "pt"})
theta = getattr(c, "rope_theta", None) or c.rope_parameters["rope_theta"]
cfg = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=c.hidden_size,
           intermediate_size=c.intermediate_size, num_hidden_layers=c.num_hidden_layers,
           num_attention_heads=c.num_attention_heads, num_key_value_heads=c.num_key_value_heads,
           vocab_size=c.vocab_size, max_position_embeddings=c.max_position_embeddings,
           rms_norm_eps=c.rms_norm_eps, rope_theta=theta, tie_word_embeddings=c.tie_word_embeddings,
           hidden_act="silu")
json.dump(cfg, open(out + "/config.json", "w"), indent=1)
print(out, cfg)
