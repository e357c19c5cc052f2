"""Shared fixtures: a tiny BERT backbone saved as a local KerasHub preset, and small data sets."""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from zoo.runtime import configure_tensorflow_cpu

configure_tensorflow_cpu()  # before any test imports TensorFlow: the same CPU settings as the CLI

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

POSITIVE = ["great", "wonderful", "brilliant", "lovely", "moving", "superb", "charming", "fun"]
NEGATIVE = ["awful", "boring", "dull", "terrible", "lazy", "clumsy", "tedious", "bad"]
FILLER = [
    "the",
    "film",
    "movie",
    "plot",
    "was",
    "is",
    "really",
    "very",
    "acting",
    "story",
    "a",
    "and",
]


def make_reviews(n: int, seed: int = 0) -> list[dict]:
    """Short generated reviews whose label is carried by one sentiment word."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        word = rng.choice(POSITIVE if label else NEGATIVE)
        words = rng.sample(FILLER, rng.randint(2, 6)) + [word]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": "positive" if label else "negative"})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def made_once(tmp_path_factory, name: str, make: Callable[[Path], object]) -> Path:
    """`<session folder>/name`, made by `make(folder)` once per test session, whichever xdist
    worker asks first (the others wait on its lock, then read it): what several test files read,
    a tiny backbone or a recipe's reference run, is built once, not once per worker. A folder
    whose `make` failed is made again by the next one to ask. Readers must not write into it."""
    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "made_once"
    shared.mkdir(exist_ok=True)
    folder, done = shared / name, shared / f"{name}.done"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BertBackbone and its tokenizer, saved as a KerasHub preset directory."""
    return made_once(
        tmp_path_factory, "tiny_bert", lambda path: save_tiny_bert(review_vocabulary(), path)
    )


def review_vocabulary() -> list[str]:
    """The words of the demo set and of `make_reviews`, with BERT's special tokens."""
    demo = (ROOT / "recipes" / "common" / "demo_data" / "sentiment_train.jsonl").read_text()
    words = sorted(
        {
            w
            for line in demo.splitlines()
            for w in json.loads(line)["text"]
            .lower()
            .replace(".", " . ")
            .replace(",", " , ")
            .replace("'", " ' ")
            .split()
        }
    )
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(
        set(words + POSITIVE + NEGATIVE + FILLER)
    )


def save_tiny_bert(vocab: list[str], path: Path, dropout: float = 0.1, seed: int = 0) -> Path:
    """A 2-layer, 32-wide BertBackbone over `vocab` and its lowercasing tokenizer, saved as a preset.
    Its weights come from `seed`: unseeded, they depended on what the test process ran before, and
    the sentiment fixture's run stopped early in some orders and not in others."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocab, lowercase=True)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(vocab),
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        intermediate_dim=64,
        max_sequence_length=64,
        dropout=dropout,
    )
    backbone.save_to_preset(str(path))
    tokenizer.save_to_preset(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_image_backbone(tmp_path_factory) -> Path:
    """A 2-stage, 2-block ResNetBackbone (KerasHub insists on 64 filters first) with a 32x32 image converter, saved as a KerasHub preset."""
    return made_once(tmp_path_factory, "tiny_resnet", save_tiny_image_backbone)


def save_tiny_image_backbone(path: Path) -> None:
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 64],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="basic_block",
    )
    converter = keras_hub.layers.ResNetImageConverter(
        image_size=(32, 32), scale=1 / 127.5, offset=-1.0
    )
    backbone.save_to_preset(str(path))
    keras_hub.models.ResNetImageClassifierPreprocessor(converter).save_to_preset(str(path))


COLOURS = {"red": (200, 40, 40), "blue": (40, 60, 200)}


def make_image_folder(root: Path, per_class: int, seed: int = 0) -> Path:
    """`root/<colour>/*.{jpg,png}`: noisy images of varied sizes whose class is their dominant colour."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = rng.integers(30, 60, size=2)
            pixels = np.clip(np.array(colour) + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(
                "uint8"
            )
            Image.fromarray(pixels).save(
                root / name / f"{name}_{i}.{'png' if i % 3 == 0 else 'jpg'}"
            )
    return root


def cli(*args: str) -> tuple[int, str, str]:
    """`keras-zoo ARGS` in this process: (exit status, stdout, stderr). Saves the ~9 s of CPU that
    a fresh process spends importing TensorFlow; `run_cli` where a fresh process is the point."""
    import contextlib
    import io

    from keras_zoo_cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse's own errors and --help
            code = e.code
    return code, out.getvalue(), err.getvalue()


def cli_here(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`cli`, with `run_cli`'s result (returncode, stdout, stderr) and `env` set for the call:
    for the tests that call the CLI in this process, where a fresh process is not the point."""
    saved = {key: os.environ.get(key) for key in env or {}}
    os.environ.update(env or {})
    try:
        code, out, err = cli(*args)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return subprocess.CompletedProcess(["keras-zoo", *args], code, out, err)


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600, env: dict | None = None):
    """Run `keras-zoo ARGS` in a fresh process; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "keras_zoo_cli", *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def requires_shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the shared benchmark data/weights beside the repository)")
    return path


# Named-entity data: generated sentences where capitalised names fill entity slots.
NER_ENTITIES = {
    "PER": [
        "Anna Smith",
        "Peter Novak",
        "Maria Garcia",
        "John Chen",
        "Omar Haddad",
        "Li Wei",
        "Sara Berg",
    ],
    "LOC": ["Paris", "Berlin", "New York", "Tokyo", "Lima", "Cairo", "Oslo"],
    "ORG": ["Acme Corp", "United Bank", "Red Cross", "Nordic Air", "Blue Labs"],
}
NER_TEMPLATES = [
    "{PER} visited {LOC} on monday .",
    "{ORG} hired {PER} in {LOC} .",
    "the talks in {LOC} were led by {PER} of {ORG} .",
    "shares of {ORG} rose after {PER} spoke .",
    "{PER} said the weather in {LOC} was fine .",
    "a new office of {ORG} opened in {LOC} today .",
]
NER_FILLER = "the market was quiet and prices rose a little as traders waited for news from the meeting".split()


def make_ner_sentences(
    n: int, seed: int = 0, long_every: int = 0
) -> list[tuple[list[str], list[str]]]:
    """`(tokens, IOB2 tags)` sentences from templates; every `long_every`-th sentence gets a long tail
    of filler words (for windowing)."""
    rng = random.Random(seed)
    sentences = []
    for i in range(n):
        tokens, tags = [], []
        for part in rng.choice(NER_TEMPLATES).split():
            if part.startswith("{"):
                entity_type = part[1:-1]
                words = rng.choice(NER_ENTITIES[entity_type]).split()
                tokens += words
                tags += [f"B-{entity_type}"] + [f"I-{entity_type}"] * (len(words) - 1)
            else:
                tokens.append(part)
                tags.append("O")
        if long_every and i % long_every == 0:
            tail = [rng.choice(NER_FILLER) for _ in range(30)]
            tokens, tags = tail[:15] + tokens + tail[15:], ["O"] * 15 + tags + ["O"] * 15
        sentences.append((tokens, tags))
    return sentences


def write_conll(path: Path, sentences, docstart_every: int = 0) -> Path:
    """CoNLL-2003 layout: `token POS chunk tag` lines, blank lines between sentences."""
    lines = []
    for i, (tokens, tags) in enumerate(sentences):
        if docstart_every and i % docstart_every == 0:
            lines += ["-DOCSTART- -X- -X- O", ""]
        lines += [f"{t} NN O {g}" for t, g in zip(tokens, tags)] + [""]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_ner_bert(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BertBackbone whose vocabulary covers the generated NER sentences (and
    sub-word pieces, so that some words split into several subwords)."""
    return made_once(
        tmp_path_factory, "tiny_ner_bert", lambda path: save_tiny_bert(ner_vocabulary(), path)
    )


def ner_vocabulary() -> list[str]:
    words = {w.lower() for names in NER_ENTITIES.values() for name in names for w in name.split()}
    words |= {w for t in NER_TEMPLATES for w in t.split() if not w.startswith("{")} | set(
        NER_FILLER
    )
    words -= {"novak", "haddad"}  # these split into pieces: "nov", "##ak", "had", "##dad"
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(
        words | {"nov", "##ak", "had", "##dad", ".", ","}
    )


# Sharing a run: its model card and its KerasHub preset export (each recipe's tests call these).
def check_model_card(run: Path) -> dict:
    """The run's README.md has Hugging Face front matter whose figures are metrics.json's, the
    per-class (or per-type) table, the pictures it links, and the command that made it; returns
    the front matter."""
    import yaml

    text = (run / "README.md").read_text()
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    metrics = json.loads((run / "metrics.json").read_text())
    shown = {
        (r["task"]["type"], m["name"]): m["value"]
        for r in front["model-index"][0]["results"]
        for m in r["metrics"]
    }
    expected = {
        (front["pipeline_tag"], f"{split} {key}"): value
        for split in ("validation", "test")
        for key, value in metrics.get(split, {}).items()
        if isinstance(value, float)
    }
    assert shown == expected and expected
    data = json.loads((run / "data.json").read_text())
    # each figure names the data it was computed on
    for result in front["model-index"][0]["results"]:
        split = result["dataset"]["split"].split(" ")[0]
        assert result["dataset"]["name"] == Path(data[split]["source"]).name, (
            split,
            result["dataset"],
        )
        assert ("held out of" in result["dataset"]["split"]) == bool(data[split]["part_of_train"])
    for split in ("validation", "test"):
        if split in metrics:
            table_row = next(
                iter(metrics[split].get("per_class", metrics[split].get("per_type", {})).items())
            )
            name, values = table_row
            assert (
                f"| {name} | {values['precision']:.4f} | {values['recall']:.4f} | {values['f1']:.4f} |"
                in text
            )
    for picture in ("curves.png", "validation_"):
        assert picture in text
    for link in [
        line[line.index("](") + 2 : -1] for line in text.splitlines() if line.startswith("![")
    ]:
        assert (run / link).read_bytes()[:4] == b"\x89PNG", link
    data = json.loads((run / "data.json").read_text())
    assert f"| train | `{data['train']['source']}` | {data['train']['examples']} |" in text
    return front


def check_preset_export(recipe: str, run: Path, inputs: list[str], preset: Path) -> None:
    """`keras-zoo export RECIPE RUN --preset DIR` writes a preset whose backbone loads with plain
    KerasHub, and whose task, reloaded in a fresh process, predicts what the run predicts."""
    from recipes import engine

    result = cli_here("export", recipe, str(run), "--preset", str(preset))
    assert result.returncode == 0, result.stderr[-3000:]
    assert {"config.json", "metadata.json", "model.weights.h5", "README.md"} <= {
        p.name for p in preset.iterdir()
    }
    assert json.loads((preset / "metadata.json").read_text())["keras_zoo_version"]
    from zoo.errors import UserError

    with pytest.raises(UserError, match="exists and is not empty"):
        engine.export_preset(recipe, run, preset)
    expected = engine.predict(recipe, run, inputs)
    script = (
        "import json, sys, keras_hub\n"
        f"backbone = keras_hub.models.Backbone.from_preset({str(preset)!r})\n"
        "assert not any(m.split('.')[0] in ('zoo', 'recipes') for m in sys.modules)\n"
        "from recipes import engine\n"
        f"model = engine.load_preset({str(preset)!r})\n"
        "print(json.dumps({'backbone': type(backbone).__name__, 'rows': model.predict(json.loads(sys.stdin.read()))}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(inputs),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reloaded = json.loads(result.stdout.splitlines()[-1])
    assert reloaded["backbone"].endswith("Backbone")
    _assert_same_predictions(reloaded["rows"], expected)


def _assert_same_predictions(got: list[dict], expected: list[dict]) -> None:
    """Same labels (or entities) and probabilities (or scores) within 1e-5."""
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        if "entities" in e:
            assert g["tags"] == e["tags"]
            assert [(x["text"], x["type"]) for x in g["entities"]] == [
                (x["text"], x["type"]) for x in e["entities"]
            ]
            for x, y in zip(g["entities"], e["entities"]):
                assert abs(x["score"] - y["score"]) < 1e-5
        else:
            assert g["label"] == e["label"]
            assert (
                max(abs(g["probabilities"][k] - e["probabilities"][k]) for k in e["probabilities"])
                < 1e-5
            )
