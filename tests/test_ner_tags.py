"""NER tags: schemes, conversions, entities and entity metrics, against seqeval's default mode
(which recipes/ner/tags.py calls: these check the glue, the conversions and the type confusion)."""

from __future__ import annotations

import numpy as np
import pytest
from seqeval.metrics.sequence_labeling import get_entities, precision_recall_fscore_support

from recipes.ner.tags import (
    SCHEMES,
    check_tags,
    detect_scheme,
    entities,
    entity_report,
    format_entity_report,
    from_iob2,
    parse_tag,
    to_iob2,
    type_confusion_png,
)
from zoo.errors import UserError

TYPES = ("PER", "LOC", "ORG")
IOB_TAGS = ["O"] + [f"{p}-{t}" for t in TYPES for p in "BI"]
BIOES_TAGS = ["O"] + [f"{p}-{t}" for t in TYPES for p in "BIES"]
EXACT = {"abs": 1e-12, "rel": 0}

# (true corpus, predicted corpus): sentences of tags, ill-formed ones included.
TRICKY = [
    ([["O", "I-PER", "I-PER", "O"]], [["B-PER", "I-PER", "O", "O"]]),  # I- after O
    ([["B-PER", "I-LOC", "O"]], [["B-PER", "B-LOC", "O"]]),  # I-Y after B-X
    ([["B-PER", "B-PER", "I-PER"]], [["B-PER", "I-PER", "I-PER"]]),  # B-X B-X
    ([["O", "B-LOC", "I-LOC"]], [["O", "B-LOC", "I-LOC"]]),  # ends inside an entity
    ([["B-LOC"], ["I-LOC", "O"]], [["B-LOC"], ["B-LOC", "O"]]),  # sentence boundary
    ([["S-PER", "B-LOC", "E-LOC", "O"]], [["B-PER", "B-LOC", "I-LOC", "O"]]),  # E-/S- tags
    # ill-formed BIOES
    (
        [["E-PER", "E-PER", "S-LOC", "I-LOC", "B-ORG", "S-ORG"]],
        [["I-PER", "E-PER", "S-LOC", "E-LOC", "B-ORG", "E-ORG"]],
    ),
    ([["I-PER", "I-LOC", "I-LOC", "B-ORG", "I-PER"]], [["O", "I-LOC", "B-LOC", "I-ORG", "I-PER"]]),
    ([["O", "O"], ["O"]], [["O", "O"], ["O"]]),  # all O
    ([["B-PER", "O"], ["B-LOC"]], [["O", "O"], ["O"]]),  # empty predictions
    ([["O", "O"], ["O"]], [["B-ORG", "I-ORG"], ["O"]]),  # nothing true
    ([[], ["B-GPE-LOC", "I-GPE-LOC"]], [[], ["B-GPE-LOC", "I-GPE-LOC"]]),  # '-' in a type
    # perfect
    (
        [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG"]],
        [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG"]],
    ),
]


def seqeval_entities(tags: list[str]) -> list[tuple[str, int, int]]:
    """seqeval's entities of one sentence, end made exclusive."""
    return [(t, s, e + 1) for t, s, e in get_entities(list(tags))]


def seqeval_scores(
    true: list[list[str]], pred: list[list[str]]
) -> tuple[tuple, dict, float | None]:
    """(micro P, R, F1), {type: (P, R, F1, support)} and macro-F1 (None when no types) from seqeval."""
    true, pred = [list(s) for s in true], [list(s) for s in pred]
    p, r, f, _ = precision_recall_fscore_support(true, pred, average="micro", zero_division=0)
    names = sorted({t for t, _, _ in get_entities(true)} | {t for t, _, _ in get_entities(pred)})
    per_type, macro = {}, None
    if names:
        ps, rs, fs, ss = precision_recall_fscore_support(true, pred, average=None, zero_division=0)
        per_type = {
            n: (float(a), float(b), float(c), int(d))
            for n, a, b, c, d in zip(names, ps, rs, fs, ss)
        }
        macro = float(
            precision_recall_fscore_support(true, pred, average="macro", zero_division=0)[2]
        )
    return (float(p), float(r), float(f)), per_type, macro


def assert_matches_seqeval(true: list[list[str]], pred: list[list[str]]) -> None:
    report = entity_report(true, pred)
    micro, per_type, macro = seqeval_scores(true, pred)
    assert (report["precision"], report["recall"], report["f1"]) == pytest.approx(micro, **EXACT)
    assert list(report["per_type"]) == list(per_type)
    for name, (p, r, f, support) in per_type.items():
        m = report["per_type"][name]
        assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((p, r, f), **EXACT), name
        assert m["support"] == support, name
    assert report["macro_f1"] == pytest.approx(0.0 if macro is None else macro, **EXACT)
    flat_true = [t for s in true for t in s]
    flat_pred = [t for s in pred for t in s]
    if flat_true:
        assert report["token_accuracy"] == pytest.approx(
            np.mean(np.array(flat_true) == np.array(flat_pred)), **EXACT
        )


def random_tags(rng: np.random.Generator, vocabulary: list[str], max_len: int = 12) -> list[str]:
    return [str(t) for t in rng.choice(vocabulary, size=int(rng.integers(0, max_len + 1)))]


def random_iob2(rng: np.random.Generator, max_len: int = 12) -> list[str]:
    """A well-formed IOB2 sentence (every I-X continues an X entity)."""
    tags: list[str] = []
    for _ in range(int(rng.integers(0, max_len + 1))):
        choice = rng.integers(0, 3)
        if choice == 2 and tags and tags[-1] != "O":
            tags.append("I-" + tags[-1][2:])
        elif choice == 1:
            tags.append("B-" + str(rng.choice(TYPES)))
        else:
            tags.append("O")
    return tags


# --- tags and schemes -------------------------------------------------------------------------------------


def test_parse_tag():
    assert parse_tag("O") == ("O", "")
    assert parse_tag("B-PER") == ("B", "PER")
    assert parse_tag("E-LOC") == ("E", "LOC")
    assert parse_tag("I-GPE-LOC") == ("I", "GPE-LOC")
    for bad in ["B-", "PER", "X-PER", "", "O-PER", "B-PER-", "B", "B- PER"]:
        with pytest.raises(ValueError, match="malformed"):
            parse_tag(bad)


@pytest.mark.parametrize("bad", ["B-", "PER", "X-PER", "E-PER"])
def test_check_tags_names_origin(bad):
    origins = ["train.txt:1", "train.txt:2", "train.txt:17"]
    with pytest.raises(UserError) as info:
        check_tags(["O", "B-PER", bad], "IOB2", origins)
    message = str(info.value)
    assert message.startswith(f"train.txt:17: tag {bad!r} is not a valid IOB2 tag")
    assert "\n" not in message


def test_check_tags_accepts_valid_forms():
    assert check_tags(["O", "I-PER", "B-GPE-LOC", "I-LOC"], "IOB2", ["a", "b", "c", "d"]) is None
    assert check_tags(["I-PER", "B-PER"], "IOB1", ["a", "b"]) is None
    assert check_tags(["S-PER", "E-LOC", "B-ORG", "I-ORG", "O"], "BIOES", list("abcde")) is None
    with pytest.raises(UserError, match=r"^x:2: tag 'S-PER' is not a valid IOB1 tag: .*BIOES"):
        check_tags(["O", "S-PER"], "IOB1", ["x:1", "x:2"])


def test_detect_scheme():
    assert detect_scheme([["B-PER", "I-PER", "O", "B-LOC"], ["O"]]) == "IOB2"
    assert detect_scheme([["O", "O"], []]) == "IOB2"
    assert detect_scheme([]) == "IOB2"
    assert detect_scheme([["B-PER", "I-PER"], ["O", "I-LOC"]]) == "IOB1"
    assert detect_scheme([["B-PER", "I-LOC"]]) == "IOB1"
    assert detect_scheme([["B-PER", "I-PER"], ["I-PER"]]) == "IOB1"  # a sentence starts afresh
    assert detect_scheme([["I-PER", "B-PER"]]) == "IOB1"
    assert detect_scheme([["B-PER", "E-PER"], ["I-PER"]]) == "BIOES"
    assert detect_scheme([["O"], ["S-LOC"]]) == "BIOES"


def test_iob1_to_iob2_and_back():
    iob1 = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC", "I-ORG", "B-ORG"]
    iob2 = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "B-ORG", "B-ORG"]
    assert to_iob2(iob1, "IOB1") == iob2
    assert from_iob2(iob2, "IOB1") == iob1


def test_bioes_to_iob2_and_back():
    bioes = ["S-PER", "O", "B-LOC", "I-LOC", "E-LOC", "B-ORG", "E-ORG", "S-ORG"]
    iob2 = ["B-PER", "O", "B-LOC", "I-LOC", "I-LOC", "B-ORG", "I-ORG", "B-ORG"]
    assert to_iob2(bioes, "BIOES") == iob2
    assert from_iob2(iob2, "BIOES") == bioes


def test_iob2_is_copied_and_ill_formed_predictions_are_written_well_formed():
    tags = ("O", "I-PER", "I-PER")
    out = to_iob2(tags, "IOB2")
    assert out == list(tags) and isinstance(out, list)
    assert from_iob2(["O", "I-PER", "I-PER", "I-LOC"], "IOB2") == ["O", "B-PER", "I-PER", "B-LOC"]
    assert from_iob2(["O", "I-PER", "I-PER", "I-LOC"], "BIOES") == ["O", "B-PER", "E-PER", "S-LOC"]
    assert from_iob2(["B-PER", "I-LOC", "B-LOC"], "IOB1") == ["I-PER", "I-LOC", "B-LOC"]
    with pytest.raises(ValueError):
        from_iob2(["S-PER"], "IOB2")
    with pytest.raises(ValueError):
        to_iob2(["E-PER"], "IOB1")
    with pytest.raises(ValueError):
        to_iob2(["O"], "IOBES")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_round_trips_on_valid_iob2(scheme):
    rng = np.random.default_rng(1)
    for _ in range(300):
        iob2 = random_iob2(rng)
        written = from_iob2(iob2, scheme)
        assert to_iob2(written, scheme) == iob2
        assert from_iob2(to_iob2(written, scheme), scheme) == written
        assert detect_scheme([written]) == (scheme if entities(iob2) else "IOB2")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_conversions_keep_seqeval_entities_on_any_input(scheme):
    rng = np.random.default_rng(2)
    vocabulary = BIOES_TAGS if scheme == "BIOES" else IOB_TAGS
    for _ in range(300):
        tags = random_tags(rng, vocabulary)
        assert entities(to_iob2(tags, scheme)) == entities(tags)
        iob2 = random_tags(rng, IOB_TAGS)
        assert entities(to_iob2(from_iob2(iob2, scheme), scheme)) == entities(iob2)


# --- entities and metrics against seqeval ----------------------------------------------------------------


def test_entities_on_tricky_cases_match_seqeval():
    for true, pred in TRICKY:
        for sentence in true + pred:
            assert entities(sentence) == seqeval_entities(sentence), sentence
    assert entities(["O", "I-PER", "I-LOC", "B-LOC", "I-LOC"]) == [
        ("PER", 1, 2),
        ("LOC", 2, 3),
        ("LOC", 3, 5),
    ]
    assert entities(["E-PER", "E-PER", "S-LOC", "I-LOC"]) == [
        ("PER", 0, 1),
        ("PER", 1, 2),
        ("LOC", 2, 3),
        ("LOC", 3, 4),
    ]
    assert entities([]) == []


def test_entities_on_random_sequences_match_seqeval():
    rng = np.random.default_rng(3)
    for vocabulary in (IOB_TAGS, BIOES_TAGS):
        for _ in range(400):
            tags = random_tags(rng, vocabulary, max_len=15)
            assert entities(tags) == seqeval_entities(tags), tags


@pytest.mark.parametrize("case", range(len(TRICKY)))
def test_report_on_tricky_cases_matches_seqeval(case):
    assert_matches_seqeval(*TRICKY[case])


def test_report_on_random_corpora_matches_seqeval():
    rng = np.random.default_rng(4)
    for vocabulary, n in ((IOB_TAGS, 300), (BIOES_TAGS, 100)):
        for i in range(n):
            true = [random_tags(rng, vocabulary) for _ in range(int(rng.integers(1, 5)))]
            noise = 0.1 + 0.8 * (i % 5) / 4  # from nearly right to nearly random predictions
            pred = [
                [str(rng.choice(vocabulary)) if rng.random() < noise else t for t in s]
                for s in true
            ]
            assert_matches_seqeval(true, pred)


def test_report_on_a_hand_checked_example():
    true = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG"], ["I-LOC", "O", "B-PER"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG", "B-PER", "O"], ["B-LOC", "O", "B-LOC"]]
    report = entity_report(true, pred)
    assert report["token_accuracy"] == pytest.approx(4 / 9, **EXACT)
    assert (report["num_sentences"], report["num_tokens"]) == (2, 9)
    assert (report["true_entities"], report["predicted_entities"], report["correct_entities"]) == (
        5,
        5,
        2,
    )
    assert (report["precision"], report["recall"], report["f1"]) == pytest.approx(
        (0.4, 0.4, 0.4), **EXACT
    )
    assert report["per_type"] == {
        "LOC": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2},
        "ORG": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
        "PER": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2},
    }
    assert report["macro_f1"] == pytest.approx(1 / 3, **EXACT)
    assert report["type_confusion"] == {
        "labels": ["LOC", "ORG", "PER", "O"],
        "matrix": [
            [1, 1, 0, 0],  # LOC: one right, one read as ORG
            [0, 0, 0, 1],  # ORG: missed
            [1, 0, 1, 0],  # PER: one right, one read as LOC
            [0, 0, 1, 0],  # O: a PER predicted where there is none
        ],
    }
    text = format_entity_report(report)
    assert text.splitlines()[:5] == [
        "| type | precision | recall | f1 | support |",
        "|---|---|---|---|---|",
        "| LOC | 0.5000 | 0.5000 | 0.5000 | 2 |",
        "| ORG | 0.0000 | 0.0000 | 0.0000 | 1 |",
        "| PER | 0.5000 | 0.5000 | 0.5000 | 2 |",
    ]
    assert "micro precision 0.4000, recall 0.4000, F1 0.4000" in text
    assert "token accuracy 0.4444" in text
    png = type_confusion_png(report)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png[16:20], "big") == 440  # 100 dpi x (2 + 0.6 per label) inches


def test_report_with_nothing_to_score():
    report = entity_report([["O", "O"]], [["O", "O"]])
    assert (report["precision"], report["recall"], report["f1"], report["macro_f1"]) == (
        0.0,
        0.0,
        0.0,
        0.0,
    )
    assert report["per_type"] == {}
    assert report["token_accuracy"] == 1.0
    assert report["type_confusion"] == {"labels": ["O"], "matrix": [[0]]}
    assert entity_report([], [])["num_tokens"] == 0


def test_report_rejects_length_mismatch():
    with pytest.raises(ValueError, match="sentence 1 has 2 true tags but 1 predicted"):
        entity_report([["O"], ["O", "B-PER"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="2 true sentences but 1 predicted"):
        entity_report([["O"], ["O"]], [["O"]])
