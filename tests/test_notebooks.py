"""Notebooks run top to bottom (on the tiny backbone, so the suite stays fast)."""

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT


def run_notebook(name: str):
    """Execute notebooks/NAME top to bottom; returns it (with outputs) and its printed text."""
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    text = "".join(
        o.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for o in cell.outputs
    )
    return notebook, text


NOTEBOOKS = ("sentiment_quickstart", "image_classification", "ner", "tuning")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_notebook_is_valid_compiles_and_names_only_modules_that_exist(name):
    """The cheap check of `make test` (running them is `make test-all`'s): valid nbformat, no stored
    outputs, every code cell compiles, and every `recipes.*`, `zoo.*` or `tuning.*` module it
    imports exists."""
    import ast
    import importlib.util

    notebook = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    nbformat.validate(notebook)
    cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert cells and not any(cell.outputs for cell in cells), "notebooks are kept without outputs"
    for cell in cells:
        source = "\n".join(
            line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))
        )
        for node in ast.walk(ast.parse(source)):
            modules = (
                [node.module]
                if isinstance(node, ast.ImportFrom) and node.module
                else [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            for module in modules:
                if module.split(".")[0] in ("recipes", "zoo", "tuning", "keras_zoo_cli"):
                    assert importlib.util.find_spec(module) is not None, (
                        f"{name}: no module {module}"
                    )
            if isinstance(node, ast.ImportFrom) and node.module in ("recipes", "recipes.engine"):
                for alias in node.names:
                    found = importlib.util.find_spec(f"{node.module}.{alias.name}")
                    assert found is not None, f"{name}: {node.module} has no {alias.name}"


@pytest.mark.slow  # `make test-all`; the check above is `make test`'s
def test_sentiment_quickstart_notebook_runs(tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_ZOO_BACKBONE", str(tiny_bert))
    monkeypatch.setenv("KERAS_ZOO_RUNS_DIR", str(tmp_path / "runs"))
    notebook, outputs = run_notebook("sentiment_quickstart.ipynb")
    assert "validation accuracy" in outputs and "saved_model" in outputs
    images = [
        o
        for cell in notebook.cells
        for o in cell.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert len(images) >= 2  # the curves and the confusion matrix were drawn
    assert (tmp_path / "runs" / "sentiment" / "quickstart" / "metrics.json").exists()


@pytest.mark.slow  # `make test-all`: the recipe's own tests cover its training, evaluation and export
def test_image_classification_notebook_runs(tiny_image_backbone, tmp_path, monkeypatch):
    from tests.conftest import make_image_folder

    images = tmp_path / "images"
    make_image_folder(images / "train", 16)
    make_image_folder(images / "val", 6, seed=1)
    monkeypatch.setenv("KERAS_ZOO_BACKBONE", str(tiny_image_backbone))
    monkeypatch.setenv("KERAS_ZOO_IMAGES", str(images))
    monkeypatch.setenv("KERAS_ZOO_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("KERAS_ZOO_EPOCHS", "1,1")
    notebook, outputs = run_notebook("image_classification.ipynb")
    assert "validation accuracy" in outputs and "misclassified validation images" in outputs
    images_drawn = [
        o
        for cell in notebook.cells
        for o in cell.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert len(images_drawn) >= 3  # augmentation preview, curves, confusion matrix
    assert (
        tmp_path / "runs" / "image_classification" / "notebook" / "export" / "model_float.tflite"
    ).exists()


@pytest.mark.slow  # `make test-all`, as above; the quick-start notebook stays in `make test`
def test_ner_notebook_runs(tiny_ner_bert, tmp_path, monkeypatch):
    from tests.conftest import make_ner_sentences, write_conll

    data = tmp_path / "conll"
    data.mkdir()
    write_conll(data / "train.txt", make_ner_sentences(200, seed=1), docstart_every=25)
    write_conll(data / "valid.txt", make_ner_sentences(40, seed=2))
    monkeypatch.setenv("KERAS_ZOO_BACKBONE", str(tiny_ner_bert))
    monkeypatch.setenv("KERAS_ZOO_NER_DATA", str(data))
    monkeypatch.setenv("KERAS_ZOO_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("KERAS_ZOO_EPOCHS", "4")
    monkeypatch.setenv("KERAS_ZOO_SET", "train.learning_rate=5e-3 train.batch_size=16")
    notebook, outputs = run_notebook("ner.ipynb")
    assert "validation entity F1" in outputs and "| PER |" in outputs
    highlighted = [
        o["data"]["text/html"]
        for cell in notebook.cells
        for o in cell.get("outputs", [])
        if "text/html" in o.get("data", {})
    ]
    # entities were found and marked
    assert any("<mark" in h and "<sub>PER</sub>" in h for h in highlighted)
    assert (
        tmp_path / "runs" / "ner" / "notebook" / "export" / "saved_model" / "saved_model.pb"
    ).exists()


@pytest.mark.slow  # a search of two trials in a kernel (about a minute); tests/test_tuning.py covers search
def test_tuning_notebook_runs(tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_ZOO_BACKBONE", str(tiny_bert))
    monkeypatch.setenv("KERAS_ZOO_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("KERAS_ZOO_TRIALS", "2")
    monkeypatch.setenv("KERAS_ZOO_SET", "train.epochs=1 train.run_eagerly=true")
    _notebook, outputs = run_notebook("tuning.ipynb")
    assert "best trial:" in outputs and "val_accuracy" in outputs
    search = tmp_path / "runs" / "sentiment" / "notebook-search"
    rows = (search / "results.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("rank,trial_id,status,objective:val_accuracy")
    assert (search / "best.yaml").exists() and len(list((search / "trials").iterdir())) == 2
