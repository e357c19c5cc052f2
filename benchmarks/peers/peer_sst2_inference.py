"""The peer's SST-2 dev inference on its own: the inference loop of ../shared/bench/peer_sst2_hf.py
(sentences tokenised first, untimed; sorted by length; batches of 64 under torch.no_grad), run once
to warm up, then `repeats` timed passes; prints the median sentences/s.

Usage: python peer_sst2_inference.py MODEL_DIR DEV_TSV [repeats=3]
Runs in the peer virtualenv that benchmarks/peers.py makes (torch, transformers), never in make test.
The classification head is new (untrained): the speed is the same as a fine-tuned model's.
"""
import csv
import json
import statistics
import sys
import time

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

model_dir, dev_tsv = sys.argv[1:3]
repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 3
with open(dev_tsv, newline="") as f:
    dx = [row["sentence"] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2).eval()


def pad(ids_list):  # the peer's own
    L = max(len(x) for x in ids_list)
    ids = torch.zeros(len(ids_list), L, dtype=torch.long); mask = torch.zeros_like(ids)
    for i, x in enumerate(ids_list):
        ids[i, :len(x)] = torch.tensor(x); mask[i, :len(x)] = 1
    return ids, mask


denc = tok(dx, truncation=True, max_length=128)["input_ids"]
order = sorted(range(len(dx)), key=lambda j: len(denc[j]))
rates = []
for rep in range(repeats + 1):
    t = time.perf_counter()
    with torch.no_grad():
        for k in range(0, len(order), 64):
            ids, mask = pad([denc[j] for j in order[k:k + 64]])
            model(input_ids=ids, attention_mask=mask).logits.argmax(-1).tolist()
    if rep:  # the first pass warms up
        rates.append(len(dx) / (time.perf_counter() - t))
print("RESULT " + json.dumps({"rate": statistics.median(rates), "rates": rates}), flush=True)
