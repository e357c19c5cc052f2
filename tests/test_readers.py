"""Data readers and classification metrics: CSV quoting read from the file, empty texts, symlinked
class folders, predict's paths, the IOB2 warning, and the scikit-learn-backed metrics, split and class
weights checked against the formulas they replaced."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from recipes.common.labels import balanced_class_weights, stratified_split
from recipes.common.metrics import classification_report, top_k_accuracy
from recipes.common.text_data import LabelledTexts, read_texts
from recipes.image_classification.images import list_image_files, read_class_folders, read_images
from recipes.ner.data import normalise_tags, read_tagged
from tests.conftest import SHARED
from zoo.errors import UserError


def one_line_error(call, *args) -> str:
    with pytest.raises(UserError) as e:
        call(*args)
    message = str(e.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------------- CSV
def test_csv_quoted_field_keeps_its_newline_and_rows_name_their_first_line(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(
        b'\xef\xbb\xbftext,label\r\n"first line\r\nsecond, line",pos\r\nnext,neg\r\n"a\n\nb",pos\n'
    )
    data = read_texts(str(path), "train", "text", "label")
    # newlines kept as written
    assert data.texts == [
        "first line\r\nsecond, line",
        "next",
        "a\n\nb",
    ]
    assert data.origins == [f"{path}:2", f"{path}:4", f"{path}:5"]  # where each row starts


def test_csv_field_of_200_kib_reads(tmp_path):
    path = tmp_path / "long.csv"
    long_text = "word " * (200 * 1024 // 5)
    path.write_text(f'text,label\n"{long_text}",pos\nshort,neg\n')
    data = read_texts(str(path), "train", "text", "label")
    assert len(data.texts[0]) == 200 * 1024 - 1  # stripped of its last space
    assert data.texts[1] == "short"


@pytest.mark.parametrize(
    "content, line",
    [
        ('text,label\nok,pos\n"never closed,neg\nmore,pos\nand more,neg\n', 3),
        ('text,label\nok,pos\nfine,"pos\n', 3),  # the open field is not the row's first
        # opens on the row's 2nd line
        (
            'text,label\n"multi\nline","also\n""quoted"" and\nnever closed\n',
            3,
        ),
        ('text,"label\nok,pos\n', 1),  # in the header
    ],
)
def test_unclosed_quote_names_the_line_where_it_opens(tmp_path, content, line):
    path = tmp_path / "open.csv"
    path.write_text(content)
    message = one_line_error(read_texts, str(path), "train", "text", "label")
    assert (
        message
        == f"{path}:{line}: unclosed quote (the field that opens here runs to the end of the file)"
    )


def test_closed_quotes_and_literal_inner_quotes_are_not_unclosed(tmp_path):
    path = tmp_path / "ok.csv"
    path.write_text('text,label\nsay "hi" twice,pos\n"he said ""no""",neg\n"ends in a quote""",pos')
    data = read_texts(str(path), "train", "text", "label")
    assert data.texts == ['say "hi" twice', 'he said "no"', 'ends in a quote"']


def test_utf8_error_names_the_line_past_the_first_read_chunk(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"text,label\n" + b'"two\nlines",1\n' * 5000 + b"caf\xe9,0\n")
    message = one_line_error(read_texts, str(path), "train", "text", "label")
    assert message.startswith(f"{path}:10002: not valid UTF-8 (byte 0xe9)")


def test_image_csv_reads_quoted_fields_and_names_the_starting_line(tmp_path):
    (tmp_path / "a b.png").write_bytes(b"")
    path = tmp_path / "images.csv"
    path.write_text('path,label\n"a b.png","red,\ndish"\nmissing.png,blue\n')
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}:4: image file not found"):
        read_images(str(path), "train")
    path.write_text('path,label\n"a b.png","red,\ndish"\n')
    data = read_images(str(path), "train")
    assert data.labels == ["red,\ndish"] and data.origins == [f"{path}:2"]
    path.write_text('path,label\n"a b.png,red\n')
    assert one_line_error(read_images, str(path), "train").startswith(f"{path}:2: unclosed quote")


@pytest.mark.skipif(
    not (SHARED / "data" / "sst2" / "train.tsv").exists(), reason="needs ../shared/data/sst2"
)
def test_glue_sst2_tsv_reads_as_before():
    for name, rows in (("train", 67_349), ("dev", 872)):
        path = SHARED / "data" / "sst2" / f"{name}.tsv"
        data = read_texts(str(path), name, "sentence", "label")
        # The files hold no quotes and no field spans lines: the reading is one row a line, split on tabs.
        lines = path.read_text(encoding="utf-8").splitlines()[1:]
        assert len(data) == rows == len(lines)
        assert data.texts == [line.split("\t")[0].strip() for line in lines]
        assert data.labels == [line.split("\t")[1] for line in lines]
        assert data.origins[-1] == f"{path}:{rows + 1}"


def test_tsv_reads_quotes_literally(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_text('text\tlabel\n"an open quote\t1\nit \'s "fine\t0\n')
    data = read_texts(str(path), "train", "text", "label")
    assert data.texts == ['"an open quote', "it 's \"fine"] and data.origins == [
        f"{path}:2",
        f"{path}:3",
    ]


# ------------------------------------------------------------------------------------- empty texts
@pytest.mark.parametrize(
    "name, content, line",
    [
        ("a.csv", 'text,label\nfine,1\n"  ",0\n', 3),
        ("a.tsv", "text\tlabel\nfine\t1\n \t0\n", 3),
        ("a.jsonl", '{"text": "fine", "label": 1}\n\n{"text": "", "label": 0}\n', 3),
    ],
)
def test_empty_text_is_an_error_naming_file_and_line(tmp_path, name, content, line):
    path = tmp_path / name
    path.write_text(content)
    message = one_line_error(read_texts, str(path), "train", "text", "label")
    assert message == f"{path}:{line}: empty text in column 'text'"


def test_empty_txt_file_in_a_class_folder_is_an_error(tmp_path):
    for label, text in [("neg", "awful"), ("pos", " \n\n")]:
        (tmp_path / label).mkdir()
        (tmp_path / label / "1.txt").write_text(text)
    message = one_line_error(read_texts, str(tmp_path), "train", "text", "label")
    assert message.startswith(f"{tmp_path / 'pos' / '1.txt'}:1: empty text")


# ---------------------------------------------------------------------------------------- symlinks
def image_folder(root, classes=("cat", "dog")):
    for name in classes:
        (root / name).mkdir(parents=True)
        (root / name / f"{name}.png").write_bytes(b"")
    return root


def test_symlink_to_a_folder_outside_is_a_class_named_after_the_link(tmp_path):
    data = image_folder(tmp_path / "data")
    image_folder(tmp_path / "elsewhere", ["birds"])
    os.symlink(tmp_path / "elsewhere" / "birds", data / "bird")
    # not a class
    os.symlink(tmp_path / "elsewhere" / "birds" / "birds.png", data / "file_link.png")
    read = read_class_folders(data)
    assert read.labels == ["bird", "cat", "dog"]
    assert read.files[0] == str(data / "bird" / "birds.png")


@pytest.mark.parametrize("target", ["data", "above", "inside"])
def test_symlink_to_the_data_folder_above_it_or_inside_it_is_an_error(tmp_path, target):
    data = image_folder(tmp_path / "above" / "data")
    os.symlink(
        {"data": data, "above": tmp_path / "above", "inside": data / "cat"}[target], data / "link"
    )
    message = one_line_error(read_class_folders, data)
    assert message.startswith(f"{data / 'link'}: symlink to ")
    assert ("(a loop)" if target != "inside" else "inside the data folder") in message


def test_symlink_loops_inside_class_folders_end(tmp_path):
    data = image_folder(tmp_path / "data")
    (data / "cat" / "sub").mkdir()
    (data / "cat" / "sub" / "deep.png").write_bytes(b"")
    os.symlink(data / "cat", data / "cat" / "sub" / "loop")  # a loop inside the class folder
    os.symlink(data, data / "dog" / "up")  # a link back to the data folder
    os.symlink(data / "cat" / "cat.png", data / "dog" / "linked.png")  # linked files are read
    read = read_class_folders(data)
    assert read.files == [
        str(data / "cat" / "cat.png"),
        str(data / "cat" / "sub" / "deep.png"),
        str(data / "dog" / "dog.png"),
        str(data / "dog" / "linked.png"),
    ]
    assert list_image_files([str(data)]) == sorted(read.files)


def test_predict_refuses_an_empty_path_and_names_a_missing_one(tmp_path):
    assert one_line_error(list_image_files, [""]) == "predict: empty path"
    assert one_line_error(list_image_files, [" \t"]) == "predict: empty path"
    assert (
        one_line_error(list_image_files, [str(tmp_path / "nope.png")])
        == f"{tmp_path / 'nope.png'}: not found"
    )


# ----------------------------------------------------------------------------------------------- NER
def test_invalid_iob2_given_as_iob2_warns_once_and_reads_as_conlleval(tmp_path, capsys):
    path = tmp_path / "a.conll"
    path.write_text("a I-PER\nb I-PER\nc O\nd I-LOC\n\ne B-PER\nf I-ORG\ng I-ORG\n")
    data = read_tagged(str(path), "train")
    assert normalise_tags(data, "IOB2") == "IOB2"
    assert data.tags == [["I-PER", "I-PER", "O", "I-LOC"], ["B-PER", "I-ORG", "I-ORG"]]  # as read
    err = capsys.readouterr().err
    assert err == (
        f"{path}: 3 tags are I-X after O or another type (not valid IOB2); read as the start of an "
        "entity, as conlleval does\n"
    )
    again = read_tagged(str(path), "train")
    # detected: no warning
    assert normalise_tags(again, "auto") == "IOB1" and capsys.readouterr().err == ""
    valid = tmp_path / "valid.conll"
    valid.write_text("a B-PER\nb I-PER\nc O\n")
    normalise_tags(read_tagged(str(valid), "train"), "IOB2")
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------------------------------ metrics
def old_classification_report(y_true, y_pred, k):
    """The hand-written formula classification_report used before scikit-learn."""
    cm = np.bincount(np.asarray(y_true) * k + np.asarray(y_pred), minlength=k * k).reshape(k, k)
    tp = np.diag(cm).astype(float)
    predicted, support = cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(
        2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0
    )
    return float(tp.sum() / max(cm.sum(), 1)), float(f1.mean()), cm, precision, recall, f1, support


@pytest.mark.parametrize("seed", range(20))
def test_classification_report_equals_the_old_formula(seed):
    rng = np.random.default_rng(seed)
    k, n = int(rng.integers(2, 9)), int(rng.integers(1, 300))
    # some classes never true, some never predicted
    used = rng.choice(k, size=max(1, k - 2), replace=False)
    y_true = rng.choice(used, n)
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, k, n))
    labels = [f"c{i}" for i in range(k)]
    report = classification_report(y_true, y_pred, labels)
    accuracy, macro_f1, cm, precision, recall, f1, support = old_classification_report(
        y_true, y_pred, k
    )
    exact = {"abs": 1e-12, "rel": 0}
    assert report["accuracy"] == pytest.approx(accuracy, **exact)
    assert report["macro_f1"] == pytest.approx(macro_f1, **exact)
    assert (
        report["num_examples"] == n
        and report["confusion_matrix"] == cm.tolist()
        and report["labels"] == labels
    )
    assert list(report["per_class"]) == labels
    for i, name in enumerate(labels):
        m = report["per_class"][name]
        assert set(m) == {"precision", "recall", "f1", "support"}
        assert (m["precision"], m["recall"], m["f1"]) == pytest.approx(
            (precision[i], recall[i], f1[i]), **exact
        )
        assert m["support"] == support[i] and isinstance(m["support"], int)


@pytest.mark.parametrize("num_classes", [2, 3, 10])
def test_top_k_accuracy_equals_the_old_formula(num_classes):
    rng = np.random.default_rng(num_classes)
    probabilities = rng.dirichlet(np.ones(num_classes), size=200)  # no ties
    y = rng.integers(0, num_classes, 200)
    for k in range(1, num_classes + 2):
        top = np.argsort(-probabilities, axis=-1)[:, :k]
        old = float((top == y[:, None]).any(axis=-1).mean())
        assert top_k_accuracy(y, probabilities, k) == pytest.approx(old, abs=1e-12)


# ------------------------------------------------------------------------------- split and weights
def texts_with_classes(sizes: dict[str, int]) -> LabelledTexts:
    # interleaved
    labels = [name for i in range(max(sizes.values())) for name, n in sizes.items() if i < n]
    return LabelledTexts(
        [f"t{i}" for i in range(len(labels))], labels, [f"f:{i}" for i in range(len(labels))]
    )


def test_sklearn_split_is_stratified_deterministic_and_keeps_order():
    data = texts_with_classes({"a": 50, "b": 30, "c": 20})
    rest, held = stratified_split(data, 0.2, seed=7)
    assert {name: held.labels.count(name) for name in "abc"} == {"a": 10, "b": 6, "c": 4}
    assert sorted(rest.texts + held.texts) == sorted(data.texts) and not set(rest.texts) & set(
        held.texts
    )
    index = {t: i for i, t in enumerate(data.texts)}
    assert [index[t] for t in held.texts] == sorted(index[t] for t in held.texts)
    assert [index[t] for t in rest.texts] == sorted(index[t] for t in rest.texts)
    again_rest, again_held = stratified_split(data, 0.2, seed=7)
    assert again_held.texts == held.texts and again_rest.texts == rest.texts
    assert stratified_split(data, 0.2, seed=8)[1].texts != held.texts


def test_split_errors_name_the_class_and_counts():
    message = one_line_error(stratified_split, texts_with_classes({"a": 20, "lonely": 1}), 0.2, 0)
    assert message.startswith("data.validation_split: class 'lonely' has 1 example")
    message = one_line_error(stratified_split, texts_with_classes({"a": 2, "b": 2, "c": 3}), 0.1, 0)
    assert (
        message.startswith("data.validation_split=0.1: 7 examples cannot be split")
        and "class 'a' has 2" in message
    )
    assert "between 0 and 1" in one_line_error(
        stratified_split, texts_with_classes({"a": 5}), 1.0, 0
    )


def test_balanced_class_weights_match_n_over_k_count():
    y = np.array([0] * 90 + [1] * 30 + [2] * 45)
    weights = balanced_class_weights(y, 3, "auto")
    assert weights == pytest.approx(
        {i: len(y) / (3 * c) for i, c in enumerate([90, 30, 45])}, abs=1e-12
    )
    assert all(type(k) is int and type(v) is float for k, v in weights.items())
    even = np.array([0] * 50 + [1] * 40)
    assert balanced_class_weights(even, 2, "auto") is None  # 1.25x: left alone
    assert balanced_class_weights(even, 2, "balanced") == pytest.approx({0: 90 / 100, 1: 90 / 80})
    assert balanced_class_weights(y, 3, "none") is None
    assert "class id 3 has no training examples" in one_line_error(
        balanced_class_weights, y, 4, "balanced"
    )
