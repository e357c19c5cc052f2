"""The peer for NER: PyTorch + transformers token classification of the same MiniLM-L6 checkpoint
on the same CoNLL-2003 sentences, with first-subword labels (the others -100, as Hugging Face's
run_ner does), dynamic padding and length grouping (megabatches of 50 batches sorted by length),
AdamW (weight decay 0.01 on all weights) with 10% linear warm-up then linear decay, truncation at
128 subwords. Prints examples/s per epoch (training batches only) and test entity F1 (exact
IOB2 spans, as seqeval's default scores CoNLL).

Usage: python peer_conll_hf.py MODEL_DIR TRAIN TEST [sentences=2000] [epochs=3] [batch=32] [lr=1e-4]
Env: BF16=1 autocast bfloat16 on CPU; THREADS=n torch threads (default: all cores).
Runs in the peer virtualenv that benchmarks/peers.py makes (torch, transformers), never in make test.
"""
import math
import os
import random
import sys
import time

import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer, get_linear_schedule_with_warmup

model_dir, train_path, test_path = sys.argv[1:4]
rows = int(sys.argv[4]) if len(sys.argv) > 4 else 2000
epochs = int(sys.argv[5]) if len(sys.argv) > 5 else 3
B = int(sys.argv[6]) if len(sys.argv) > 6 else 32
lr = float(sys.argv[7]) if len(sys.argv) > 7 else 1e-4
if os.environ.get("THREADS"):
    torch.set_num_threads(int(os.environ["THREADS"]))
bf16 = os.environ.get("BF16") == "1"


def read(path, n=None):
    sentences, words, tags = [], [], []
    for line in open(path, encoding="utf-8"):
        parts = line.split()
        if not parts or parts[0] == "-DOCSTART-":
            if words:
                sentences.append((words, tags))
            words, tags = [], []
            continue
        words.append(parts[0]); tags.append(parts[-1])
    if words:
        sentences.append((words, tags))
    return sentences[:n] if n else sentences


train, test = read(train_path, rows), read(test_path)
names = sorted({t for _, tags in train for t in tags}, key=lambda t: (t != "O", t))
tag_id = {t: i for i, t in enumerate(names)}
torch.manual_seed(42); random.seed(42)
tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForTokenClassification.from_pretrained(model_dir, num_labels=len(names))


def encode(sentences):
    enc = tok([w for w, _ in sentences], is_split_into_words=True, truncation=True, max_length=128)
    out = []
    for i, (_, tags) in enumerate(sentences):
        labels, previous = [], None
        for w in enc.word_ids(i):
            labels.append(-100 if w is None or w == previous else tag_id.get(tags[w], 0))
            previous = w
        out.append((enc["input_ids"][i], labels))
    return out


data = encode(train)
steps_per_epoch = math.ceil(len(data) / B)
opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
sched = get_linear_schedule_with_warmup(opt, int(0.1 * steps_per_epoch * epochs), steps_per_epoch * epochs)


def batches(n):
    idx = list(range(n)); random.shuffle(idx)
    mega = 50 * B
    out = []
    for i in range(0, n, mega):
        m = sorted(idx[i:i + mega], key=lambda j: -len(data[j][0]))
        out += [m[k:k + B] for k in range(0, len(m), B)]
    return out


def pad(items):
    L = max(len(ids) for ids, _ in items)
    ids = torch.zeros(len(items), L, dtype=torch.long); mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, (x, y) in enumerate(items):
        ids[i, :len(x)] = torch.tensor(x); mask[i, :len(x)] = 1; labels[i, :len(y)] = torch.tensor(y)
    return ids, mask, labels


for ep in range(epochs):
    model.train(); t = time.perf_counter(); n = 0
    for b in batches(len(data)):
        ids, mask, labels = pad([data[j] for j in b])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward(); opt.step(); sched.step(); opt.zero_grad(); n += len(b)
    dt = time.perf_counter() - t
    print(f"epoch {ep + 1}: {n / dt:.1f} examples/s ({dt:.0f} s)", flush=True)


def spans(tags):
    out, start, kind = set(), None, None
    for i, t in enumerate(list(tags) + ["O"]):
        if start is not None and not (t.startswith("I-") and t[2:] == kind):
            out.add((start, i, kind)); start = None
        if t.startswith("B-") or (t.startswith("I-") and start is None):
            start, kind = i, t[2:]
    return out


model.eval(); tp = fp = fn = 0
tests = encode(test)
order = sorted(range(len(tests)), key=lambda j: len(tests[j][0]))
t = time.perf_counter()
with torch.no_grad():
    for k in range(0, len(order), 64):
        b = order[k:k + 64]; ids, mask, labels = pad([tests[j] for j in b])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            pred = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
        for row, j in enumerate(b):
            words, gold = test[j]
            first = (labels[row] != -100).nonzero().flatten().tolist()
            guess = [names[pred[row, p]] for p in first] + ["O"] * (len(words) - len(first))  # truncated words: O
            g, p = spans(gold), spans(guess)
            tp += len(g & p); fp += len(p - g); fn += len(g - p)
f1 = 2 * tp / max(2 * tp + fp + fn, 1)
print(f"test entity F1 {100 * f1:.2f} ({len(test)} sentences, inference {len(test) / (time.perf_counter() - t):.0f}/s)")
print(f"RESULT peer_hf_conll bf16={int(bf16)} sentences={rows} epochs={epochs}")
