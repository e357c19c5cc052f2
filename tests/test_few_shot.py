"""Few-shot sentiment (`model.finetune: few_shot`, `data.examples_per_class`) on a tiny BERT: the
sample, the pairs, both stages, `auto`, and the errors. Values compared in float32 unless said."""

import csv
import json
import random

import numpy as np
import pytest

from tests.conftest import (
    check_model_card,
    check_preset_export,
    cli_here,
    make_reviews,
    write_jsonl,
)

FAST = ["--set", "run.embeddings=0", "--set", "train.precision=float32"]


def peer_draw(labels: list[int], n: int, seed: int) -> list[int]:
    """The draw of ../shared/bench/peer_fewshot_setfit.py, line for line."""
    rng = random.Random(seed)
    return [
        i
        for c in sorted(set(labels))
        for i in rng.sample([j for j, y in enumerate(labels) if y == c], n)
    ]


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_the_sample_is_the_peers_draw(seed):
    from recipes.common.labels import sample_per_class
    from recipes.common.text_data import LabelledTexts

    rng = random.Random(3)
    labels = [rng.randrange(12) for _ in range(600)]  # 12 classes: "10" after "9", as integers
    data = LabelledTexts(
        [f"text {i}" for i in range(600)], [str(y) for y in labels], [f"f:{i}" for i in range(600)]
    )
    drawn = sample_per_class(data, 8, seed)
    expected = peer_draw(labels, 8, seed)
    assert drawn.texts == [f"text {i}" for i in expected]
    assert drawn.labels == [str(labels[i]) for i in expected]


def test_sample_errors_name_the_class_and_its_count():
    from recipes.common.labels import sample_per_class
    from recipes.common.text_data import LabelledTexts
    from zoo.errors import UserError

    data = LabelledTexts(
        ["a", "b", "c", "d"], ["x", "x", "x", "y"], [f"t.tsv:{i}" for i in range(4)]
    )
    with pytest.raises(UserError, match=r"class 'y' has only 1 examples in t.tsv; lower it") as e:
        sample_per_class(data, 2, 0)
    assert "\n" not in str(e.value)
    one_class = LabelledTexts(["a", "b"], ["x", "x"], ["t.tsv:1", "t.tsv:2"])
    with pytest.raises(
        UserError, match=r"t.tsv has 1 class \(x\); a classifier needs at least two"
    ):
        sample_per_class(one_class, 1, 0)


def test_batches_deal_the_classes_in_turn_and_the_seed_fixes_them(tiny_bert):
    import keras_hub

    from recipes.sentiment.few_shot import class_balanced_batches
    from zoo.text_inputs import TextEncoder, load_tokenizer

    backbone = keras_hub.models.Backbone.from_preset(str(tiny_bert))
    encoder = TextEncoder(load_tokenizer(tiny_bert), list(backbone.input), 16, False)
    rows = make_reviews(24, seed=4)  # 12 of each class
    texts, y = [r["text"] for r in rows], np.array([r["label"] == "positive" for r in rows], int)

    def unpadded(ids) -> list[tuple]:
        return [tuple(i for i in row if i != encoder.pad_id) for row in np.asarray(ids).tolist()]

    def batches(seed: int) -> list[tuple[list, list]]:
        ds = class_balanced_batches(encoder, texts, y, 8, seed, steps=6)
        return [(unpadded(b["token_ids"]), labels.numpy().tolist()) for b, labels in ds]

    first = batches(0)
    assert len(first) == 6
    for _, labels in first:  # 4 of each class in every batch of 8
        assert sorted(labels) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert batches(0) == first
    assert batches(1) != first
    # a pass of 3 batches holds every example once; the next pass deals them in another order
    every = sorted(unpadded(encoder.padded_batch(encoder.tokenize(texts)[0])["token_ids"]))
    for one_pass in (first[:3], first[3:]):
        assert sorted(row for ids, _ in one_pass for row in ids) == every
    assert first[:3] != first[3:]


def test_the_pairs_weigh_one_class_and_two_classes_half_each_and_no_self_pairs():
    from recipes.sentiment.few_shot import contrastive_loss, pair_targets

    labels = np.array([0, 0, 0, 1, 1, 2])
    same, weights = (t.numpy() for t in pair_targets(labels))
    assert np.all(np.diag(weights) == 0)
    positive = (labels[:, None] == labels[None, :]) & ~np.eye(6, dtype=bool)
    assert weights[positive].sum() == pytest.approx(0.5, abs=1e-6)
    assert weights[~(labels[:, None] == labels[None, :])].sum() == pytest.approx(0.5, abs=1e-6)
    assert np.all(weights[positive] == weights[positive][0])  # every pair of a class alike
    assert same[0, 1] == 1 and same[0, 3] == 0
    # vectors that already separate the classes score a lower loss than ones that mix them
    apart = np.eye(3)[labels] + 0.01
    mixed = np.eye(3)[[0, 1, 2, 0, 1, 2]] + 0.01
    for kind in ("cosine", "supervised_contrastive"):
        loss = contrastive_loss(kind, 0.1)
        assert float(loss(labels, apart)) < float(loss(labels, mixed)), kind


@pytest.fixture(scope="module")
def few_shot_run(tiny_bert, tmp_path_factory):
    """The acceptance command on generated reviews: 16 examples a class from 200 (enough to meet
    most of the 16 sentiment words), with validation data (for tune) and test data."""
    work = tmp_path_factory.mktemp("few_shot")
    train = write_jsonl(work / "train.jsonl", make_reviews(200, seed=1))
    dev = write_jsonl(work / "dev.jsonl", make_reviews(40, seed=2))
    result = cli_here(
        "train", "sentiment", "--name", "fs", "--runs-dir", str(work / "runs"),
        "--set", f"model.backbone={tiny_bert}",
        "--set", f"data.train={train}",
        "--set", f"data.validation={dev}",
        "--set", f"data.test={dev}",
        "--set", "data.examples_per_class=16",
        "--set", "data.sample_seed=3",
        "--set", "model.finetune=few_shot",
        "--set", "few_shot.learning_rate=3e-3",
        "--set", "few_shot.pair_passes=16",
        *FAST,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return work, work / "runs" / "sentiment" / "fs", result.stdout


def test_both_stages_train_a_fixed_budget_and_keep_the_last_epoch(few_shot_run, tiny_bert):
    import keras_hub

    from recipes import engine, sentiment
    from recipes.sentiment.few_shot import contrastive_loss
    from zoo.heads import head_features, text_classifier
    from zoo.text_inputs import TextEncoder, load_tokenizer

    work, run, stdout = few_shot_run
    with (run / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2  # one epoch a stage
    contrastive, head = rows
    assert contrastive["accuracy"] == "" and float(head["accuracy"]) > 0.7  # chance: 0.5
    assert "val_accuracy" not in head  # nothing is validated during training, nothing chosen
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["chosen_epoch"]["chosen_on"] == "none" and metrics["chosen_epoch"]["epoch"] == 2
    assert metrics["train_seconds"] > 0
    assert metrics["test"]["accuracy"] > 0.7  # chance: 0.5
    assert "kept the last epoch (2): a fixed budget" in stdout
    assert json.loads((run / "task.json").read_text())["finetune"] == "few_shot"
    data = json.loads((run / "data.json").read_text())["train"]
    assert data["examples"] == 32 and data["examples_per_class"] == 16 and data["sample_seed"] == 3
    assert len(data["sample_sha256"]) == 64
    # stage 1 tuned the backbone: its contrastive loss on the sample fell from the pretrained one's
    trained = engine.open_finished(sentiment.RECIPE, run)[2]
    before = keras_hub.models.Backbone.from_preset(str(tiny_bert))
    sample = [json.loads(line) for line in (work / "train.jsonl").read_text().splitlines()]
    texts = [r["text"] for r in sample[:64]]
    y = np.array([r["label"] == "positive" for r in sample[:64]], int)
    encoder = TextEncoder(load_tokenizer(tiny_bert), list(before.input), 32, False)
    inputs = encoder.padded_batch(encoder.tokenize(texts)[0])
    loss = contrastive_loss("cosine", 0.05)  # the default loss the run trained on
    untrained = head_features(text_classifier(before, 2, 0.0))
    tuned = head_features(trained.model)
    assert float(loss(y, tuned(inputs))) < 0.8 * float(loss(y, untrained(inputs)))


def test_the_few_shot_run_predicts_evaluates_exports_and_has_a_card(few_shot_run, tmp_path):
    work, run, _ = few_shot_run
    dev = [json.loads(line) for line in (work / "dev.jsonl").read_text().splitlines()]
    (tmp_path / "dev.txt").write_text("".join(r["text"] + "\n" for r in dev))
    result = cli_here(
        "predict", "sentiment", str(run), "--file", str(tmp_path / "dev.txt"), "--jsonl"
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.strip().splitlines()]
    right = sum(row["label"] == r["label"] for row, r in zip(rows, dev, strict=True))
    # predict gives the labels the test figures count (dev is the test data too)
    assert right / len(dev) == pytest.approx(
        json.loads((run / "metrics.json").read_text())["test"]["accuracy"], abs=1e-9
    )
    result = cli_here("evaluate", "sentiment", str(run), "--data", str(work / "dev.jsonl"))
    assert result.returncode == 0, result.stderr
    check_preset_export("sentiment", run, ["a lovely film", "boring"], tmp_path / "preset")
    check_model_card(run)
    card = (run / "README.md").read_text()
    assert "Fine-tuning mode: `few_shot`." in card
    assert "no validation set chose anything" in card
    assert "Train is a sample of 16 examples per class of its source, drawn with seed 3" in card


def test_without_validation_data_nothing_is_carved_and_tune_refuses(tiny_bert, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", make_reviews(60, seed=5))
    args = ["--set", f"model.backbone={tiny_bert}", "--set", f"data.train={train}",
            "--set", "data.examples_per_class=4", "--set", "model.finetune=auto",
            "--set", "few_shot.pair_passes=1", *FAST]  # fmt: skip
    result = cli_here("train", "sentiment", "--name", "a", "--runs-dir", str(tmp_path), *args)
    assert result.returncode == 0, result.stderr[-3000:]
    # auto: 4 examples a class is below few_shot.auto_below
    assert (
        "model.finetune=auto: few_shot (the smallest class has 4 training examples" in result.stdout
    )
    run = tmp_path / "sentiment" / "a"
    assert set(json.loads((run / "data.json").read_text())) == {"train"}
    assert json.loads((run / "metrics.json").read_text())["chosen_epoch"]["chosen_on"] == "none"
    result = cli_here("tune", "sentiment", "--name", "s", "--runs-dir", str(tmp_path), *args)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith("nothing is held out of a data.examples_per_class sample; give data.validation")
    )
    assert not (tmp_path / "sentiment" / "s").exists()


def test_auto_picks_full_at_and_above_its_threshold():
    from recipes.sentiment.few_shot import FewShotConfig, resolve_finetune

    cfg = FewShotConfig(auto_below=32)
    assert resolve_finetune("auto", [31, 500], cfg) == "few_shot"
    assert resolve_finetune("auto", [32, 40], cfg) == "full"
    assert resolve_finetune("lora", [3, 3], cfg) == "lora"


def test_bad_few_shot_inputs_are_one_line_errors(tiny_bert, tiny_image_backbone, tmp_path):
    rows = make_reviews(20, seed=6)
    rows += [{"text": "a rare film", "label": "neutral"}] * 3
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    one = write_jsonl(tmp_path / "one.jsonl", [r for r in rows if r["label"] == "positive"])
    cases = [
        ([f"data.train={train}", "data.examples_per_class=5"],
         f"data.examples_per_class=5: class 'neutral' has only 3 examples in {train}"),
        ([f"data.train={one}", "data.examples_per_class=2"],
         f"data.examples_per_class: {one} has 1 class (positive); a classifier needs at least two"),
        ([f"data.train={train}", "data.examples_per_class=2", f"model.backbone={tiny_image_backbone}"],
         "is an image backbone; this recipe needs a text one"),
        ([f"data.train={train}", "data.examples_per_class=2", "data.selection_split=0.2"],
         "data.selection_split: nothing is held out of a data.examples_per_class sample"),
    ]  # fmt: skip
    for overrides, message in cases:
        overrides = [f"model.backbone={tiny_bert}", "model.finetune=few_shot", *overrides]
        sets = [part for o in overrides for part in ("--set", o)]
        result = cli_here("train", "sentiment", "--name", "bad", "--runs-dir", str(tmp_path), *sets)
        assert result.returncode == 2, (overrides, result.stderr[-2000:])
        last = result.stderr.strip().splitlines()[-1]
        assert message in last, (overrides, last)
        assert not (tmp_path / "sentiment" / "bad").exists()


def test_tune_searches_few_shot_runs_scored_on_validation_data(few_shot_run, tiny_bert, tmp_path):
    from recipes import sentiment
    from tuning.search import tune

    work, _, _ = few_shot_run
    cfg = sentiment.RECIPE.load_config(
        overrides=[
            f"model.backbone={tiny_bert}",
            f"data.train={work / 'train.jsonl'}",
            f"data.validation={work / 'dev.jsonl'}",
            "data.examples_per_class=8",
            "model.finetune=few_shot",
            "few_shot.pair_passes=2",
            "run.embeddings=0",
            "train.precision=float32",
            "tuning.trial_process=in_process",
            "tuning.algorithm=grid",
            "tuning.max_trials=2",
            "tuning.space={few_shot.head_c: [0.01, 1.0]}",
        ]
    )
    result = tune("sentiment", cfg, tmp_path / "search")
    trials = json.loads((tmp_path / "search" / "results.json").read_text())["trials"]
    assert sorted(t["hyperparameters"]["few_shot.head_c"] for t in trials) == [0.01, 1.0]
    for trial in trials:  # each trial's objective is its run's accuracy on the validation data
        trial_run = tmp_path / "search" / "trials" / f"trial_{trial['trial_id']}" / "run0"
        metrics = json.loads((trial_run / "metrics.json").read_text())
        assert trial["status"] == "COMPLETED"
        assert trial["objective"] == pytest.approx(metrics["validation"]["accuracy"], abs=1e-6)
        assert metrics["chosen_epoch"]["chosen_on"] == "none"
    assert result.best["objective"] == max(t["objective"] for t in trials)
