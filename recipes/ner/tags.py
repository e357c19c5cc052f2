"""Named-entity tags: their schemes (IOB1, IOB2, BIOES), conversions, entities and entity-level metrics.

Entities and their precision, recall and F1 come from seqeval (its default mode, which reads them
as conlleval does: any tag sequence, even an ill-formed one, has one reading), so the scores are
the ones papers report. Written here: what seqeval lacks, the checks of a file's tags against its
scheme, the conversion to IOB2 and back, and the entity-type confusion. No TensorFlow.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from seqeval.metrics.sequence_labeling import get_entities, precision_recall_fscore_support

from recipes.common.metrics import confusion_matrix_png
from zoo.errors import UserError

SCHEMES = ("IOB1", "IOB2", "BIOES")
PREFIXES = {"IOB1": ("B", "I"), "IOB2": ("B", "I"), "BIOES": ("B", "I", "E", "S")}


def _problem(tag: object) -> str | None:
    """Why `tag` is not a well-formed tag of any scheme, or None when it is one."""
    if not isinstance(tag, str):
        return f"a tag must be a string, not {type(tag).__name__}"
    if tag == "O":
        return None
    if not tag:
        return "empty tag"
    if any(c.isspace() for c in tag):
        return "contains whitespace"
    if "-" not in tag:
        return "no B-/I-/E-/S- prefix"
    prefix, type_ = tag.split("-", 1)
    if prefix == "O":
        return "O takes no entity type"
    if prefix not in ("B", "I", "E", "S"):
        return f"unknown prefix '{prefix}-' (prefixes are B-, I-, E-, S-)"
    if not type_:
        return "empty entity type"
    if type_.startswith("-") or type_.endswith("-"):
        return f"entity type '{type_}' starts or ends with '-'"
    return None


def _check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown tag scheme {scheme!r} (schemes: {', '.join(SCHEMES)})")


def parse_tag(tag: str) -> tuple[str, str]:
    """`("B", "PER")` for "B-PER", `("O", "")` for "O". The type may contain '-' ("B-GPE-LOC" is type
    "GPE-LOC"); an empty type ("B-"), a missing or unknown prefix ("PER", "X-PER") raise ValueError."""
    problem = _problem(tag)
    if problem is not None:
        raise ValueError(f"tag {tag!r} is malformed: {problem}")
    if tag == "O":
        return "O", ""
    prefix, type_ = tag.split("-", 1)
    return prefix, type_


def _parse_in(tags: Sequence[str], scheme: str) -> list[tuple[str, str]]:
    """The parsed tags, each of a form `scheme` allows (ValueError otherwise)."""
    parsed = [parse_tag(tag) for tag in tags]
    for tag, (prefix, _) in zip(tags, parsed):
        if prefix != "O" and prefix not in PREFIXES[scheme]:
            raise ValueError(f"tag {tag!r} is not a {scheme} tag")
    return parsed


def check_tags(tags: Sequence[str], scheme: str, origins: Sequence[str]) -> None:
    """Raise UserError naming `origins[i]` for the first tag whose form is not valid in `scheme`
    (IOB1/IOB2: O, B-T, I-T; BIOES: also E-T, S-T). Sequences are not checked: real and predicted
    data have I- after O, and the schemes say how to read it."""
    _check_scheme(scheme)
    if len(tags) != len(origins):
        raise ValueError(f"check_tags: {len(tags)} tags but {len(origins)} origins")
    allowed = PREFIXES[scheme]
    valid = "O, " + ", ".join(f"{p}-TYPE" for p in allowed)
    for tag, origin in zip(tags, origins):
        problem = _problem(tag)
        if problem is None and tag != "O" and tag.split("-", 1)[0] not in allowed:
            problem = f"{tag.split('-', 1)[0]}- tags belong to BIOES; set the tag scheme to BIOES"
        if problem is not None:
            raise UserError(
                f"{origin}: tag {tag!r} is not a valid {scheme} tag: {problem} (valid: {valid})"
            )


def detect_scheme(sequences: Iterable[Sequence[str]]) -> str:
    """The scheme tagged sentences are written in: 'BIOES' if any E-/S- tag, else 'IOB2' if every I-X
    follows B-X or I-X, else 'IOB1' (whose entities may start with I-). Malformed tags are skipped
    here; check_tags reports them."""
    iob1 = False
    for tags in sequences:
        prev = ("O", "")
        for tag in tags:
            if _problem(tag) is not None:
                prev = ("O", "")
                continue
            prefix, type_ = parse_tag(tag)
            if prefix in ("E", "S"):
                return "BIOES"
            if prefix == "I" and not (prev[0] in ("B", "I") and prev[1] == type_):
                iob1 = True
            prev = (prefix, type_)
    return "IOB1" if iob1 else "IOB2"


def invalid_iob2_starts(tags: Sequence[str]) -> int:
    """How many I-X tags of one sentence of well-formed tags follow O, another type or nothing: not
    valid IOB2, where only B-X starts an entity (conlleval and seqeval read them as a start)."""
    count, prev = 0, ("O", "")
    for prefix, type_ in (parse_tag(tag) for tag in tags):
        if prefix == "I" and not (prev[0] in ("B", "I") and prev[1] == type_):
            count += 1
        prev = (prefix, type_)
    return count


def entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """One sentence's entities as `(type, start, end_exclusive)`, read by seqeval's `get_entities`
    (as conlleval reads them, ill-formed sequences included: I-X after O starts an entity; I-Y
    after B-X ends X and starts Y; E-X / S-X end one). Malformed tags raise ValueError."""
    for tag in tags:
        parse_tag(tag)
    return [(type_, start, end + 1) for type_, start, end in get_entities(list(tags))]


def to_iob2(tags: Sequence[str], scheme: str) -> list[str]:
    """One sentence's tags in IOB2 (what the models train on). IOB1: an I-X that does not continue an
    X entity becomes B-X; BIOES: S-X -> B-X, E-X -> I-X; IOB2: a copy. Ill-formed input keeps the
    entities seqeval reads in it: `entities(to_iob2(tags, scheme)) == entities(tags)`."""
    _check_scheme(scheme)
    _parse_in(tags, scheme)
    if scheme == "IOB2":
        return list(tags)
    out = ["O"] * len(tags)
    for type_, start, end in entities(tags):
        out[start] = f"B-{type_}"
        out[start + 1 : end] = [f"I-{type_}"] * (end - start - 1)
    return out


def from_iob2(tags: Sequence[str], scheme: str) -> list[str]:
    """One sentence's IOB2 tags written in `scheme`, to give predictions back in the user's scheme.
    IOB1: I-X throughout, B-X only to start an entity directly after another X entity; BIOES: S-X for
    a one-token entity, else B-X I-X... E-X; IOB2: well-formed (an I-X after O becomes B-X). The output
    is always well-formed and keeps the entities: `entities(to_iob2(from_iob2(t, s), s)) == entities(t)`."""
    _check_scheme(scheme)
    _parse_in(tags, "IOB2")
    out = ["O"] * len(tags)
    prev_end, prev_type = -1, ""
    for type_, start, end in entities(tags):
        inner = [f"I-{type_}"] * (end - start)
        if scheme == "IOB1":
            if start == prev_end and type_ == prev_type:
                inner[0] = f"B-{type_}"
        elif scheme == "IOB2":
            inner[0] = f"B-{type_}"
        elif end - start == 1:
            inner[0] = f"S-{type_}"
        else:
            inner[0], inner[-1] = f"B-{type_}", f"E-{type_}"
        out[start:end] = inner
        prev_end, prev_type = end, type_
    return out


def entity_report(true: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict:
    """Entity-level metrics: seqeval's micro and per-type precision, recall and F1 (support = true
    entities; an entity is correct when its type, start and end all match), macro-F1, token accuracy,
    counts, and the type confusion (rows true type, columns predicted, "O" last: an entity without
    one of the same span on the other side). JSON-ready."""
    if len(true) != len(pred):
        raise ValueError(f"entity_report: {len(true)} true sentences but {len(pred)} predicted")
    true_spans, pred_spans = [], []
    num_tokens = correct_tokens = 0
    for i, (t, p) in enumerate(zip(true, pred)):
        if len(t) != len(p):
            raise ValueError(
                f"entity_report: sentence {i} has {len(t)} true tags but {len(p)} predicted"
            )
        num_tokens += len(t)
        correct_tokens += sum(a == b for a, b in zip(t, p))
        true_spans.append({(s, e): type_ for type_, s, e in entities(t)})
        pred_spans.append({(s, e): type_ for type_, s, e in entities(p)})

    types = sorted({x for spans in true_spans + pred_spans for x in spans.values()})
    index = {name: k for k, name in enumerate(types)}
    outside = len(types)
    cm = np.zeros((outside + 1, outside + 1), dtype=np.int64)
    for t_spans, p_spans in zip(true_spans, pred_spans):
        for span, type_ in t_spans.items():
            other = p_spans.get(span)
            cm[index[type_], outside if other is None else index[other]] += 1
        for span, type_ in p_spans.items():
            if span not in t_spans:
                cm[outside, index[type_]] += 1
    sequences = [list(t) for t in true], [list(p) for p in pred]
    # no entity on either side: nothing to score
    per_type, precision, recall, f1 = (
        {},
        0.0,
        0.0,
        0.0,
    )
    if types:  # seqeval's per-type arrays follow the sorted types of both sides, as `types` does
        scores = precision_recall_fscore_support(*sequences, average=None, zero_division=0)
        per_type = {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
            for name, p, r, f, n in zip(types, *scores)
        }
        precision, recall, f1, _ = precision_recall_fscore_support(
            *sequences, average="micro", zero_division=0
        )
    correct = int(np.trace(cm[:outside, :outside]))
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "per_type": per_type,
        "macro_f1": float(np.mean([m["f1"] for m in per_type.values()])) if types else 0.0,
        "token_accuracy": correct_tokens / num_tokens if num_tokens else 0.0,
        "num_sentences": len(true),
        "num_tokens": num_tokens,
        "true_entities": sum(len(spans) for spans in true_spans),
        "predicted_entities": sum(len(spans) for spans in pred_spans),
        "correct_entities": correct,
        "type_confusion": {"labels": types + ["O"], "matrix": cm.tolist()},
    }


def format_entity_report(report: dict) -> str:
    """The per-type table as Markdown, then the micro scores and counts (readable in a terminal and in
    TensorBoard's text tab)."""
    lines = ["| type | precision | recall | f1 | support |", "|---|---|---|---|---|"]
    for name, m in report["per_type"].items():
        lines.append(
            f"| {name} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | {m['support']} |"
        )
    lines.append(
        f"\nmicro precision {report['precision']:.4f}, recall {report['recall']:.4f}, "
        f"F1 {report['f1']:.4f}, macro-F1 {report['macro_f1']:.4f}, "
        f"token accuracy {report['token_accuracy']:.4f}; {report['correct_entities']} of "
        f"{report['predicted_entities']} predicted entities correct, {report['true_entities']} true "
        f"entities, {report['num_sentences']} sentences, {report['num_tokens']} tokens"
    )
    return "\n".join(lines)


def type_confusion_png(report: dict) -> bytes:
    """The entity type confusion (true type by predicted type, "O" for none) drawn as a PNG."""
    confusion = report["type_confusion"]
    return confusion_matrix_png(confusion["matrix"], confusion["labels"])
