"""The peer's side of benchmarks/encoder_layer_parts.py: the same parts of one transformers BertLayer
(384 wide, 12 heads, 1536 intermediate, exact GELU, SDPA attention) in PyTorch, random weights.

Usage: python peer_encoder_layer_parts.py [batch=64] [length=40] [repeats=9]
Runs in the peer virtualenv that benchmarks/peers.py makes (torch, transformers), never in make test.
"self_attention" here includes the output projection's residual add and layer norm (BertAttention);
keras-zoo's does not (one layer norm and one add, timed apart there).
"""
import json
import statistics
import sys
import time

import torch
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertLayer

batch, length, repeats = (int(a) for a in (sys.argv[1:] + ["64", "40", "9"][len(sys.argv) - 1:]))
torch.manual_seed(0)
layer = BertLayer(BertConfig(hidden_size=384, num_attention_heads=12, intermediate_size=1536,
                             attn_implementation="sdpa")).eval()
x = torch.randn(batch, length, 384)
mask = torch.zeros(batch, 1, 1, length)  # the additive mask BertModel passes its layers
hidden = torch.randn(batch * length, 1536)
parts = {
    "layer": lambda: layer(x, attention_mask=mask),
    "self_attention": lambda: layer.attention(x, attention_mask=mask),
    "feed_forward": lambda: layer.output.dense(layer.intermediate(x)),
    "feed_forward_matmuls_only": lambda: (x.reshape(-1, 384) @ layer.intermediate.dense.weight.T) @ layer.output.dense.weight.T,
    "layer_norm": lambda: layer.output.LayerNorm(x),
    "gelu_exact": lambda: torch.nn.functional.gelu(hidden),
}
times = {name: [] for name in parts}
with torch.no_grad():
    for part in parts.values():
        part()
    for _ in range(repeats):
        for name, part in parts.items():
            start = time.perf_counter()
            for _ in range(10):
                part()
            times[name].append((time.perf_counter() - start) * 100)
print("RESULT " + json.dumps({"tool": "peer", "threads": torch.get_num_threads(), "batch": batch, "length": length,
                              **{name: round(statistics.median(t), 2) for name, t in times.items()}}))
