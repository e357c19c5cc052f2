import pytest

from recipes.common.labels import label_ids, label_order, read_class_splits, stratified_split
from recipes.common.text_data import read_texts
from zoo.errors import UserError


def test_reads_csv_tsv_jsonl_and_folders(tmp_path):
    (tmp_path / "a.csv").write_text('review,stars\n"good, really",pos\nbad,neg\n')
    (tmp_path / "a.tsv").write_text('sentence\tlabel\nit \'s a "fine" film \t1\nno\t0\n')
    (tmp_path / "a.jsonl").write_text(
        '{"text": "ok", "label": 2}\n\n{"text": "meh", "label": 10}\n'
    )
    for label, text in [("pos", "nice"), ("neg", "awful")]:
        (tmp_path / "folder" / label).mkdir(parents=True)
        (tmp_path / "folder" / label / "1.txt").write_text(text + "\n")
    csv = read_texts(str(tmp_path / "a.csv"), "train", "review", "stars")
    assert csv.texts == ["good, really", "bad"] and csv.labels == ["pos", "neg"]
    tsv = read_texts(str(tmp_path / "a.tsv"), "train", "sentence", "label")
    # quotes literal, space stripped
    assert tsv.texts == ['it \'s a "fine" film', "no"] and tsv.labels == [
        "1",
        "0",
    ]
    jsonl = read_texts(str(tmp_path / "a.jsonl"), "train", "text", "label")
    assert jsonl.labels == ["2", "10"] and jsonl.origins[1].endswith("a.jsonl:3")
    assert label_order(jsonl.labels) == ["2", "10"]  # integer labels sort numerically
    folder = read_texts(str(tmp_path / "folder"), "train", "text", "label")
    assert sorted(zip(folder.labels, folder.texts)) == [("neg", "awful"), ("pos", "nice")]


def test_demo_set_is_bundled_and_balanced():
    train = read_texts("demo", "train", "text", "label")
    validation = read_texts("demo", "validation", "text", "label")
    assert len(train) >= 200 and len(validation) >= 50
    assert set(train.labels) == {"negative", "positive"}
    assert not set(train.texts) & set(validation.texts)


@pytest.mark.parametrize(
    "content, columns, message",
    [
        (b"", ("text", "label"), r"empty\.csv: no examples \(empty file\)"),
        (
            b"review,label\nfine,1\n",
            ("text", "label"),
            r"empty\.csv:2: no column 'text' \(columns: review, label\)",
        ),
        (
            b"text,label\nfine,1\nbad,0,extra\n",
            ("text", "label"),
            r"empty\.csv:3: 3 fields, expected 2",
        ),
        (b"text,label\nfine,1\ncaf\xe9,0\n", ("text", "label"), r"empty\.csv:3: not valid UTF-8"),
        (b"text,label\nfine,\n", ("text", "label"), r"empty\.csv:2: empty label"),
    ],
)
def test_bad_files_get_one_line_errors_with_file_and_line(tmp_path, content, columns, message):
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as e:
        read_texts(str(path), "train", *columns)
    assert "\n" not in str(e.value)


def test_malformed_jsonl_and_missing_file(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label"\n')
    with pytest.raises(UserError, match=r"x\.jsonl:2: malformed JSON"):
        read_texts(str(path), "train", "text", "label")
    with pytest.raises(UserError, match=r"missing\.tsv: file not found"):
        read_texts(str(tmp_path / "missing.tsv"), "train", "text", "label")


def test_unseen_label_names_file_and_line(tmp_path):
    path = tmp_path / "dev.jsonl"
    path.write_text('{"text": "a", "label": "positive"}\n{"text": "b", "label": "neutral"}\n')
    data = read_texts(str(path), "validation", "text", "label")
    with pytest.raises(
        UserError, match=r"dev\.jsonl:2: label 'neutral' was never seen in training"
    ):
        label_ids(data, ["negative", "positive"])


def test_stratified_split_is_seeded_and_keeps_class_shares():
    data = read_texts("demo", "train", "text", "label")
    train, held = stratified_split(data, 0.2, seed=3)
    _again, held_again = stratified_split(data, 0.2, seed=3)
    assert held.texts == held_again.texts and len(train) + len(held) == len(data)
    assert not set(train.origins) & set(held.origins)
    for name in ("negative", "positive"):
        share = held.labels.count(name) / data.labels.count(name)
        assert abs(share - 0.2) < 0.02


def test_a_selection_split_is_held_out_of_train_stratified_and_named_in_errors():
    read = lambda source, split: read_texts(source, split, "text", "label")  # noqa: E731
    train, validation, _, names, selection = read_class_splits(
        read, "demo", "", "", 0.1, 3, selection_split=0.25
    )
    whole = read_texts("demo", "train", "text", "label")
    assert len(train) + len(selection) + len(validation) == len(whole)
    assert not set(train.origins) & set(selection.origins) and not set(selection.origins) & set(
        validation.origins
    )
    for name in names:  # a quarter of what validation left
        assert abs(selection.labels.count(name) / (whole.labels.count(name) * 0.9) - 0.25) < 0.03
    assert read_class_splits(read, "demo", "demo", "", 0.1, 3)[4] is None  # off: no selection split
    with pytest.raises(
        UserError, match=r"data\.selection_split=0\.999: .* or set data\.selection_split=0"
    ):
        read_class_splits(read, "demo", "demo", "", 0.1, 3, selection_split=0.999)


@pytest.mark.parametrize(
    "name, label_names", [("imdb_reviews", {"neg", "pos"}), ("glue/sst2", {"negative", "positive"})]
)
def test_tfds_sources_read_text_and_class_names(name, label_names):
    tfds = pytest.importorskip("tensorflow_datasets")
    # offline: TFDS's own mock examples, real feature specs
    with tfds.testing.mock_data(num_examples=12):
        data = read_texts(f"tfds:{name}", "validation", "text", "label")
    assert len(data) == 12 and all(isinstance(t, str) for t in data.texts)
    assert set(data.labels) <= label_names and data.origins[0].startswith(f"tfds:{name}/")
