"""Read tagged sentences for named-entity recognition.

Formats:
- CoNLL column files (`.txt`, `.conll`, ...): one token a line, columns split on any whitespace,
  a blank line between sentences, `-DOCSTART-` lines skipped; which columns hold the token and the
  tag is configurable (default: first and last).
- JSONL with `tokens` and `tags` lists per line.
- JSONL with raw `text` and character-offset entity `spans` per line (`{"start", "end", "label"}`
  objects or `[start, end, label]` lists); the text is split into words the way `predict` splits
  it, and words inside a span are tagged.
- `tfds:NAME` (e.g. `tfds:conll2003`, `tfds:wikiann/en`): a sequence of tokens and a sequence of
  class labels.

Tags may be IOB1, IOB2 or BIOES; they are checked and converted to IOB2, the recipe's one scheme.
Every sentence remembers where it came from (`file:line`) for errors.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from recipes.common.text_data import jsonl_rows, read_lines
from recipes.common.tfds_data import prepared_builder, split_for
from recipes.ner import tags as ner_tags
from recipes.ner.token_inputs import pretokenize
from zoo.errors import UserError
from zoo.progress import progress

JSONL_SUFFIXES = (".jsonl", ".json")


@dataclass
class TaggedSentences:
    tokens: list[list[str]]
    tags: list[list[str]]  # IOB2 after `normalise_tags`; empty lists for unlabelled input
    origins: list[str]  # "file:line" of each sentence (its first token's line for CoNLL)
    # per token, where the file has one line a token
    token_origins: list[list[str]] = field(default_factory=list)
    # The document of each sentence (a CoNLL file's -DOCSTART- sections; a file without them is one
    # document); empty where the format has none (JSONL, TFDS): each sentence then stands alone.
    documents: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokens)

    def subset(self, keep: Sequence[int]) -> TaggedSentences:
        """The sentences at the indices `keep`, in that order."""

        def pick(rows):
            return [rows[i] for i in keep] if rows else []

        return TaggedSentences(
            pick(self.tokens),
            pick(self.tags),
            pick(self.origins),
            pick(self.token_origins),
            pick(self.documents),
        )


def read_tagged(
    source: str, split: str, token_column: int = 0, tag_column: int = -1
) -> TaggedSentences:
    """Read one split from a CoNLL file, a JSONL file or `tfds:NAME` (tags as written, not yet checked)."""
    if source.startswith("tfds:"):
        return _read_tfds(source[5:], split)
    path = Path(source)
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give a CoNLL file, a JSONL file or tfds:NAME")
    if not path.exists():
        raise UserError(f"{path}: file not found")
    data = (
        _read_jsonl(path)
        if path.suffix.lower() in JSONL_SUFFIXES
        else _read_conll(path, token_column, tag_column)
    )
    if not data.tokens:
        raise UserError(f"{path}: no sentences (empty file)")
    return data


def normalise_tags(data: TaggedSentences, scheme: str) -> str:
    """Check every tag against `scheme` ("auto": detected from the data) and convert them to IOB2 in
    place; returns the scheme the data was in. Given "IOB2", I-X tags after O or another type (not
    valid IOB2) are read as an entity's start, as conlleval does, with one warning line on stderr."""
    if scheme == "auto":
        scheme = ner_tags.detect_scheme(data.tags)
    invalid = 0
    for i, tags in enumerate(data.tags):
        origins = data.token_origins[i] if data.token_origins else [data.origins[i]] * len(tags)
        ner_tags.check_tags(tags, scheme, origins)
        if scheme == "IOB2":
            invalid += ner_tags.invalid_iob2_starts(tags)
        data.tags[i] = ner_tags.to_iob2(tags, scheme)
    if invalid:
        # Given as IOB2 (auto-detection would have said IOB1): read as conlleval does, which is how
        # the scores are computed too, but say so, as the file may really be IOB1.
        print(
            f"{_source(data)}: {invalid} tags are I-X after O or another type (not valid IOB2); "
            "read as the start of an entity, as conlleval does",
            file=sys.stderr,
        )
    return scheme


def _source(data: TaggedSentences) -> str:
    """The file (or TFDS split) the sentences came from: their first origin without its line or index."""
    return re.sub(r"(:\d+|\[\d+\])$", "", data.origins[0]) if data.origins else "data"


def tag_set(data: TaggedSentences) -> list[str]:
    """The model's labels: "O", then B-/I- of every entity type in the training data, types sorted."""
    types = sorted({tag[2:] for tags in data.tags for tag in tags if tag != "O"})
    return ["O"] + [f"{prefix}-{t}" for t in types for prefix in ("B", "I")]


def check_known_tags(data: TaggedSentences, tags: Sequence[str]) -> None:
    """An entity type the model never saw in training is an error naming where it is."""
    known = set(tags)
    for i, sentence in enumerate(data.tags):
        for j, tag in enumerate(sentence):
            if tag not in known:
                origin = data.token_origins[i][j] if data.token_origins else data.origins[i]
                types = sorted({t[2:] for t in tags if t != "O"})
                raise UserError(
                    f"{origin}: entity type '{tag[2:]}' was never seen in training "
                    f"(types: {', '.join(types)})"
                )


def context_groups(
    data: TaggedSentences,
    subword_counts: Sequence[int],
    window: int,
    rng: np.random.Generator | None = None,
) -> list[list[int]]:
    """Consecutive sentences of one document packed greedily into groups of at most `window`
    subwords, so that each is tagged with its neighbours as context (one group a sentence where
    the documents are unknown; a sentence longer than `window` is a group of its own).

    With `rng` (training), each group's size limit is drawn uniformly from 1 to `window` subwords,
    so the model also learns from sentences with little or no context, as `predict` may give them.

    Example:
        >>> data = TaggedSentences([["a"]] * 4, [["O"]] * 4, [""] * 4, documents=[1, 1, 1, 2])
        >>> context_groups(data, [3, 4, 2, 1], window=8)
        [[0, 1], [2], [3]]
    """
    if not data.documents:
        return [[i] for i in range(len(data))]
    groups: list[list[int]] = []
    used = limit = 0
    for i, (document, count) in enumerate(zip(data.documents, subword_counts)):
        if not groups or document != data.documents[groups[-1][-1]] or used + count > limit:
            groups.append([])
            used, limit = 0, window if rng is None else int(rng.integers(1, window + 1))
        groups[-1].append(i)
        used += count
    return groups


def join_groups(rows: Sequence[Sequence], groups: Sequence[Sequence[int]]) -> list[list]:
    """Each group's rows (words, tags, ...) concatenated into one."""
    return [[x for i in group for x in rows[i]] for group in groups]


def split_groups(
    joined: Sequence[Sequence], groups: Sequence[Sequence[int]], lengths: Sequence[int]
) -> list[list]:
    """The inverse of `join_groups`: row `i` back on its own, `lengths[i]` long."""
    rows: list[list] = [[] for _ in lengths]
    for group, row in zip(groups, joined):
        start = 0
        for i in group:
            rows[i] = list(row[start : start + lengths[i]])
            start += lengths[i]
    return rows


# ------------------------------------------------------------------------------------------- CoNLL
def _read_conll(path: Path, token_column: int, tag_column: int) -> TaggedSentences:
    tokens, tags, origins, token_origins, documents = [], [], [], [], []
    sentence: list[tuple[str, str, str]] = []
    columns = None  # every token line of a file has the same number of columns
    document = 0

    def close():
        if sentence:
            tokens.append([t for t, _, _ in sentence])
            tags.append([g for _, g, _ in sentence])
            token_origins.append([o for _, _, o in sentence])
            origins.append(sentence[0][2])
            documents.append(document)
            sentence.clear()

    for number, line in enumerate(read_lines(path), start=1):
        fields = line.split()
        if not fields:
            close()
            continue
        if fields[0] == "-DOCSTART-":
            close()
            document += 1
            continue
        origin = f"{path}:{number}"
        if columns is None:
            columns = len(fields)
            for name, index in (
                ("data.token_column", token_column),
                ("data.tag_column", tag_column),
            ):
                if not -columns <= index < columns:
                    raise UserError(
                        f"{origin}: {columns} columns, so {name}={index} does not exist"
                    )
            if columns < 2:
                raise UserError(f"{origin}: 1 column; a CoNLL line needs a token and a tag")
        elif len(fields) != columns:
            raise UserError(
                f"{origin}: {len(fields)} columns, expected {columns} like the file's first line "
                f"({line.strip()[:60]!r})"
            )
        sentence.append((fields[token_column], fields[tag_column], origin))
    close()
    return TaggedSentences(tokens, tags, origins, token_origins, documents)


# ------------------------------------------------------------------------------------------- JSONL
def _read_jsonl(path: Path) -> TaggedSentences:

    tokens, tags, origins = [], [], []
    texts, spans = [], []
    for number, row in jsonl_rows(path):
        origin = f"{path}:{number}"
        if "tokens" in row:
            words, labels = row["tokens"], row.get("tags", row.get("ner_tags"))
            if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                raise UserError(f"{origin}: 'tokens' must be a list of strings")
            if labels is None:
                raise UserError(f"{origin}: no 'tags' list beside 'tokens'")
            if not isinstance(labels, list) or not all(isinstance(t, str) for t in labels):
                raise UserError(f"{origin}: 'tags' must be a list of tag strings such as \"B-PER\"")
            if len(words) != len(labels):
                raise UserError(f"{origin}: {len(words)} tokens but {len(labels)} tags")
            if any(not w or any(c.isspace() for c in w) for w in words):
                raise UserError(f"{origin}: a token is empty or contains whitespace")
            if words:
                tokens.append(words)
                tags.append(labels)
                origins.append(origin)
        elif "text" in row:
            if not isinstance(row["text"], str):
                raise UserError(f"{origin}: 'text' must be a string")
            texts.append((origin, row["text"]))
            spans.append(_spans(row.get("spans", row.get("entities", [])), row["text"], origin))
        else:
            raise UserError(
                f"{origin}: expected 'tokens' and 'tags', or 'text' and 'spans' (keys: {', '.join(row)})"
            )
    if texts:
        words_per_text = _split_words([t for _, t in texts])
        for (origin, _), (words, starts, ends), entity_spans in zip(texts, words_per_text, spans):
            if words:
                tokens.append(words)
                tags.append(_tags_from_spans(starts, ends, entity_spans))
                origins.append(origin)
    return TaggedSentences(tokens, tags, origins)


def _spans(value, text: str, origin: str) -> list[tuple[int, int, str]]:
    """`(start, end, label)` spans sorted by start; outside the text or overlapping is an error."""
    if not isinstance(value, list):
        raise UserError(f"{origin}: 'spans' must be a list")
    spans = []
    for i, span in enumerate(value):
        if isinstance(span, dict):
            span = (span.get("start"), span.get("end"), span.get("label", span.get("type")))
        if not (
            isinstance(span, (list, tuple))
            and len(span) == 3
            and all(isinstance(v, int) for v in span[:2])
            and isinstance(span[2], str)
            and span[2]
        ):
            raise UserError(
                f'{origin}: span {i} must be {{"start": int, "end": int, "label": str}}, '
                f"not {json.dumps(value[i])}"
            )
        start, end, label = span
        if not 0 <= start < end <= len(text):
            raise UserError(
                f"{origin}: span {i} [{start}, {end}) is outside the text (length {len(text)}) or empty"
            )
        if "-" in label and label.split("-", 1)[0] in ("B", "I", "E", "S"):
            raise UserError(
                f"{origin}: span {i} label '{label}' is an entity type, without a B-/I- prefix"
            )
        spans.append((start, end, label, i))
    spans.sort()
    for (s0, e0, _, i0), (s1, e1, _, i1) in itertools.pairwise(spans):
        if s1 < e0:
            raise UserError(f"{origin}: span {i1} [{s1}, {e1}) overlaps span {i0} [{s0}, {e0})")
    return [(s, e, label) for s, e, label, _ in spans]


def _split_words(texts: list[str]) -> list[tuple[list[str], list[int], list[int]]]:
    """Words and their character offsets, split by the same graph code as `predict` and the export."""

    words, starts, ends = pretokenize(tf.constant(texts))
    return [
        ([w.decode("utf-8") for w in ws], s, e)
        for ws, s, e in zip(words.to_list(), starts.to_list(), ends.to_list())
    ]


def _tags_from_spans(
    starts: list[int], ends: list[int], spans: list[tuple[int, int, str]]
) -> list[str]:
    """IOB2 tags of words: a word overlapping a span is in that entity (a span that cuts a word
    takes the whole word)."""
    tags = ["O"] * len(starts)
    for span_start, span_end, label in spans:
        inside = [
            i for i, (s, e) in enumerate(zip(starts, ends)) if s < span_end and e > span_start
        ]
        for k, i in enumerate(inside):
            if tags[i] == "O":
                tags[i] = ("B-" if k == 0 else "I-") + label
    return tags


# -------------------------------------------------------------------------------------------- TFDS
def _read_tfds(name: str, split: str) -> TaggedSentences:

    builder = prepared_builder(name, "point data.train at a local CoNLL or JSONL file instead")
    tfds_split = split_for(builder, name, split)
    features = builder.info.features

    def sequence_of(kind):
        return [
            k
            for k, f in features.items()
            if isinstance(f, tfds.features.Sequence) and isinstance(f.feature, kind)
        ]

    token_keys = [
        k for k in sequence_of(tfds.features.Text) if k in ("tokens", "words")
    ] or sequence_of(tfds.features.Text)
    tag_keys = [
        k for k in sequence_of(tfds.features.ClassLabel) if k in ("ner", "ner_tags", "tags")
    ]
    if not token_keys or not tag_keys:
        raise UserError(
            f"tfds:{name}: no token sequence and NER tag sequence among its features ({', '.join(features)})"
        )
    names = features[tag_keys[0]].feature.names
    tokens, tags, origins = [], [], []
    examples = progress(
        tfds.as_numpy(builder.as_dataset(split=tfds_split)), desc=f"reading {name}", unit="example"
    )
    for i, example in enumerate(examples):
        words = [w.decode("utf-8") for w in example[token_keys[0]]]
        origin = f"tfds:{name}/{tfds_split}[{i}]"
        if len(words) != len(example[tag_keys[0]]):
            raise UserError(f"{origin}: {len(words)} tokens but {len(example[tag_keys[0]])} tags")
        if words:
            tokens.append(words)
            tags.append([names[int(t)] for t in example[tag_keys[0]]])
            origins.append(origin)
    return TaggedSentences(tokens, tags, origins)
