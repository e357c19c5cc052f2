"""NER readers: CoNLL, JSONL tokens/tags, JSONL text/spans, TFDS; tag schemes; one-line errors."""

import json

import pytest

from recipes.ner.data import normalise_tags, read_tagged, tag_set
from zoo.errors import UserError


def write(path, text):
    path.write_text(text)
    return str(path)


def test_conll_skips_docstart_any_whitespace_and_chosen_columns(tmp_path):
    source = write(
        tmp_path / "a.conll",
        "-DOCSTART- -X- O\n\nEU\tNNP  B-ORG\nrejects VBZ O\n\n\n"
        "Peter NNP B-PER\nBlackburn NNP I-PER\n",
    )
    data = read_tagged(source, "train")
    assert data.tokens == [["EU", "rejects"], ["Peter", "Blackburn"]]
    assert data.tags == [["B-ORG", "O"], ["B-PER", "I-PER"]]
    assert data.origins == [f"{source}:3", f"{source}:7"]
    pos = read_tagged(source, "train", token_column=0, tag_column=1)
    assert pos.tags[0] == ["NNP", "VBZ"]


def test_conll_documents_group_neighbouring_sentences_within_the_window(tmp_path):
    from recipes.ner.data import context_groups, join_groups, split_groups

    lines = ["a O", ""]  # a first sentence before any -DOCSTART-
    for d in range(2):  # two documents of three sentences, 1, 2 and 3 words long
        lines += ["-DOCSTART- O", ""]
        for s in range(3):
            lines += [f"w{d}{s} O"] * (s + 1) + [""]
    data = read_tagged(write(tmp_path / "a.conll", "\n".join(lines)), "train")
    assert data.documents == [0, 1, 1, 1, 2, 2, 2]
    assert [len(t) for t in data.tokens] == [1, 1, 2, 3, 1, 2, 3]
    words = [len(t) for t in data.tokens]  # one subword a word here
    # never across documents; a group stops before it would pass the window
    assert context_groups(data, words, window=3) == [[0], [1, 2], [3], [4, 5], [6]]
    assert context_groups(data, words, window=100) == [[0], [1, 2, 3], [4, 5, 6]]
    # 2 and 3 are each too long
    assert context_groups(data, words, window=1) == [
        [0],
        [1],
        [2],
        [3],
        [4],
        [5],
        [6],
    ]
    groups = context_groups(data, words, window=3)
    joined = join_groups(data.tokens, groups)
    assert joined[1] == ["w00", "w01", "w01"]
    assert split_groups(joined, groups, words) == data.tokens
    # the same reading of a file without -DOCSTART- (one document) and of JSONL (no documents: one a sentence)
    assert read_tagged(write(tmp_path / "b.txt", "a O\n\nb O\n"), "train").documents == [0, 0]
    jsonl = read_tagged(
        write(tmp_path / "c.jsonl", '{"tokens": ["a"], "tags": ["O"]}\n' * 2), "train"
    )
    assert jsonl.documents == [] and context_groups(jsonl, [1, 1], window=100) == [[0], [1]]
    assert data.subset([4, 1]).documents == [2, 1] and data.subset([4, 1]).tokens == [
        ["w10"],
        ["w00"],
    ]


def test_training_groups_have_random_sizes_but_keep_order_and_documents():
    import numpy as np

    from recipes.ner.data import TaggedSentences, context_groups

    documents = [d for d in range(20) for _ in range(10)]  # 20 documents of 10 sentences
    data = TaggedSentences([["w"]] * 200, [["O"]] * 200, [""] * 200, documents=documents)
    counts = np.random.default_rng(0).integers(3, 30, 200)
    groups = context_groups(data, counts, window=126, rng=np.random.default_rng(1))
    assert [i for g in groups for i in g] == list(range(200))  # every sentence once, in order
    assert all(
        len({documents[i] for i in g}) == 1 and sum(counts[i] for i in g) <= 126 for g in groups
    )
    sizes = [len(g) for g in groups]
    full = context_groups(data, counts, window=126)
    assert sizes.count(1) >= 20 and max(sizes) >= 4  # alone and in context, both
    assert len(full) < len(groups)  # the evaluation's groups fill their windows
    # seeded
    assert groups == context_groups(data, counts, window=126, rng=np.random.default_rng(1))


@pytest.mark.parametrize(
    "scheme,tags",
    [
        ("IOB1", ["I-PER", "I-PER", "B-PER", "O", "I-LOC"]),
        ("BIOES", ["B-PER", "E-PER", "S-PER", "O", "S-LOC"]),
        ("IOB2", ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]),
    ],
)
def test_tag_schemes_are_detected_and_converted_to_iob2(tmp_path, scheme, tags):
    lines = "".join(f"w{i} {t}\n" for i, t in enumerate(tags))
    data = read_tagged(write(tmp_path / "a.txt", lines), "train")
    assert normalise_tags(data, "auto") == scheme
    assert data.tags == [["B-PER", "I-PER", "B-PER", "O", "B-LOC"]]
    assert tag_set(data) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def test_jsonl_tokens_and_tags(tmp_path):
    source = write(
        tmp_path / "a.jsonl",
        json.dumps({"tokens": ["Anna", "sings"], "tags": ["B-PER", "O"]}) + "\n",
    )
    data = read_tagged(source, "train")
    assert data.tokens == [["Anna", "sings"]] and data.tags == [["B-PER", "O"]]
    assert data.origins == [f"{source}:1"]


def test_jsonl_text_and_spans_tag_the_words_the_predictor_sees(tmp_path):
    text = "Dr. Zoë  Müller-Lang flew to São Paulo 😀!"
    spans = [{"start": 4, "end": 20, "label": "PER"}, [29, 38, "LOC"]]
    source = write(
        tmp_path / "a.jsonl", json.dumps({"text": text, "spans": spans}, ensure_ascii=False) + "\n"
    )
    data = read_tagged(source, "train")
    assert data.tokens == [
        ["Dr", ".", "Zoë", "Müller", "-", "Lang", "flew", "to", "São", "Paulo", "😀", "!"]
    ]
    assert data.tags == [
        ["O", "O", "B-PER", "I-PER", "I-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "O", "O"]
    ]


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("cols.txt", "EU NNP B-ORG\nrejects O\n", "cols.txt:2: 2 columns, expected 3"),
        ("tag.txt", "EU NNP B-\n", "tag.txt:1: tag 'B-' is not a valid"),
        (
            "len.jsonl",
            '{"tokens": ["a", "b"], "tags": ["O"]}\n',
            "len.jsonl:1: 2 tokens but 1 tags",
        ),
        (
            "out.jsonl",
            '{"text": "Anna", "spans": [[0, 9, "PER"]]}\n',
            "out.jsonl:1: span 0 [0, 9) is outside the text",
        ),
        (
            "overlap.jsonl",
            '{"text": "Anna Smith", "spans": [[0, 10, "PER"], [5, 10, "PER"]]}\n',
            "overlap.jsonl:1: span 1 [5, 10) overlaps span 0 [0, 10)",
        ),
        (
            "bad.jsonl",
            '{"tokens": ["a"], "tags": ["O"]}\n{"tokens": \n',
            "bad.jsonl:2: malformed JSON",
        ),
    ],
)
def test_bad_input_is_a_one_line_error_naming_file_and_line(tmp_path, name, content, message):
    source = write(tmp_path / name, content)
    with pytest.raises(UserError) as e:
        normalise_tags(read_tagged(source, "train"), "IOB2")
    assert str(e.value).startswith(str(tmp_path / message.split(":")[0]))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_missing_file_and_unseen_entity_type(tmp_path):
    from recipes import ner

    with pytest.raises(UserError, match="nope.txt: file not found"):
        read_tagged(str(tmp_path / "nope.txt"), "train")
    train = write(tmp_path / "train.txt", "Anna B-PER\nsings O\n")
    valid = write(tmp_path / "valid.txt", "Paris B-LOC\n")
    cfg = ner.RECIPE.load_config(overrides=[f"data.train={train}", f"data.validation={valid}"])
    with pytest.raises(
        UserError, match=r"valid.txt:1: entity type 'LOC' was never seen in training"
    ):
        ner.RECIPE.read_data(cfg)


def test_tfds_conll2003_and_wikiann_with_mock_data():
    """The real TFDS feature specs (offline metadata) with mock examples: the token and tag features
    are found by type, tags come back as names; mismatched lengths (TFDS's random mocks) are errors."""
    tfds = pytest.importorskip("tensorflow_datasets")
    import tensorflow as tf

    for name in ("conll2003", "wikiann/en"):
        features = tfds.builder(name).info.features
        tag_key = "ner" if "ner" in features else "tags"
        names = features[tag_key].feature.names
        sentences = [(["Anna", "sings"], ["B-PER", "O"]), (["in", "Paris"], ["O", "B-LOC"])]

        def as_dataset(self, *args, sentences=sentences, tag_key=tag_key, names=names, **kwargs):
            rows = {
                "tokens": tf.ragged.constant([t for t, _ in sentences]),
                tag_key: tf.ragged.constant(
                    [[names.index(g) for g in tags] for _, tags in sentences]
                ),
            }
            return tf.data.Dataset.from_tensor_slices(rows).map(
                lambda r: {k: v for k, v in r.items()}
            )

        with tfds.testing.mock_data(as_dataset_fn=as_dataset):
            data = read_tagged(f"tfds:{name}", "train")
        assert data.tokens == [["Anna", "sings"], ["in", "Paris"]]
        assert data.tags == [["B-PER", "O"], ["O", "B-LOC"]]
        assert data.origins == [f"tfds:{name}/train[0]", f"tfds:{name}/train[1]"]
    with (
        tfds.testing.mock_data(num_examples=4),
        pytest.raises(UserError, match=r"tfds:conll2003/train\[0\]: \d+ tokens but \d+ tags"),
    ):
        read_tagged("tfds:conll2003", "train")
