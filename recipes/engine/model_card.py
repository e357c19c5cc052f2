"""A model card for every run: `README.md` with Hugging Face model-card front matter (YAML), so
it renders on the hubs, and the training curves and confusion matrix as PNG files beside it.

It is written from the run's own files, so a run, its `export/` and a `--preset` export carry
the same card:

    run.json      how the run was started (`origin`)        config.yaml   the resolved config
    data.json     each split's source, size, fingerprint      metrics.json  the evaluation reports
    task.json     labels, lengths                             history.csv   the per-epoch figures
    *.png         the evaluations' pictures (`<split>_<name>.png`, written by the engine)

    >>> write_model_card(load_recipe("sentiment"), Path("runs/sentiment/demo"))  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shlex
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from recipes.engine.run_files import read_if_present, read_run_file
from recipes.engine.run_metrics import scalar_metrics
from zoo.catalog import CATALOG
from zoo.progress import progress

CARD = "README.md"
CURVES = "curves.png"


# ---------------------------------------------------------------------------------------- data facts
def fingerprint(source: str) -> str:
    """A SHA-256 of a data source's content: a file's bytes, or every file under a folder (relative
    path and bytes, in sorted order). Sources that are not local paths (tfds:NAME) give ""."""
    path = Path(source)
    if not source or not path.exists():
        return ""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in progress(files, total=len(files), desc=f"fingerprinting {path.name}", unit="file"):
        digest.update(str(file.relative_to(path) if file != path else file.name).encode())
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def split_source(examples: Any) -> str:
    """Where a split's examples were read from: the file or folder holding all of them, from their
    origins ("file:line", image paths, "tfds:name/split[i]"); "" when they do not say."""
    origins = getattr(examples, "origins", None)
    if not origins:
        return ""
    places = sorted({re.sub(r"(:\d+|\[\d+\])$", "", str(origin)) for origin in origins})
    if len(places) == 1:
        return places[0]
    try:
        return os.path.commonpath(places) if not any(p.startswith("tfds:") for p in places) else ""
    except ValueError:  # absolute and relative paths mixed
        return ""


def data_summary(splits: Any) -> dict[str, dict]:
    """`{split: {source, examples, part_of_train, sha256}}` of the data a run trained and was
    evaluated on (train also has `examples_per_class`, `sample_seed` and `sample_sha256` when
    it is a sample, `splits.train_sample`). A split that came out of train's file or folder (`validation_split`,
    `selection_split`, a validation folder inside train's folder) says so."""
    summary: dict[str, dict] = {}
    hashes: dict[str, str] = {}
    for split in ("train", "validation", "test", "selection"):
        examples = getattr(splits, split, None)
        if examples is None:
            continue
        source = split_source(examples)
        train = summary.get("train", {}).get("source", "")
        within_train = bool(
            source
            and train
            and split != "train"
            and (source == train or Path(source).is_relative_to(train))
        )
        if source not in hashes:
            hashes[source] = fingerprint(source)
        # (inputs, targets) or a split
        count = len(examples[0]) if isinstance(examples, tuple) else len(examples)
        summary[split] = {
            "source": source,
            "examples": count,
            "part_of_train": within_train,
            "sha256": hashes[source],
        }
    if summary.get("train") and getattr(splits, "train_sample", None):
        summary["train"].update(splits.train_sample)  # examples_per_class, seed, the sample's hash
    return summary


# -------------------------------------------------------------------------------------------- card
def write_model_card(
    recipe: Any, run_path: Path, directory: Path | None = None, name: str = ""
) -> Path:
    """Write `README.md`, `curves.png` and the evaluation PNGs for the run at `run_path` into
    `directory` (default: the run itself); returns the card's path. `name`: the run's name
    (default: its folder's; a replacement is trained in a hidden folder of another name)."""
    directory = Path(directory or run_path)
    directory.mkdir(parents=True, exist_ok=True)
    facts = {**_run_facts(run_path), **({"name": name} if name else {})}
    pictures = sorted(p.name for p in run_path.glob("*.png") if p.name != CURVES)
    if directory != run_path:
        for name in pictures:
            shutil.copyfile(run_path / name, directory / name)
    if _write_curves(facts["history"], facts["cfg"]["train"]["monitor"], directory / CURVES):
        pictures.insert(0, CURVES)
    card = directory / CARD
    card.write_text(
        f"---\n{yaml.safe_dump(front_matter(recipe, facts), sort_keys=False)}---\n\n"
        + card_body(recipe, facts, pictures)
    )
    return card


def _run_facts(run_path: Path) -> dict:
    def read_json(name: str) -> dict:
        return read_if_present(run_path / name)

    history = []
    if (run_path / "history.csv").exists():
        with open(run_path / "history.csv") as f:
            history = list(csv.DictReader(f))
    return {
        "name": run_path.name,
        "status": read_json("run.json"),
        "data": read_json("data.json"),
        "metrics": read_json("metrics.json"),
        "task": read_json("task.json"),
        "history": history,
        "cfg": read_run_file(run_path / "config.yaml"),
        "config_text": (run_path / "config.yaml").read_text(),
    }


def front_matter(recipe: Any, facts: dict) -> dict:
    """Hugging Face model-card metadata: licence, library, pipeline tag, base model and the
    reported figures as a `model-index` (the values are metrics.json's, unrounded)."""
    backbone = _backbone(facts["cfg"])
    entry = CATALOG.get(backbone)
    results = [
        {
            "task": {"type": recipe.hub_task},
            "dataset": evaluated_on(facts["data"], split),
            "metrics": [
                {"type": key, "value": value, "name": f"{split} {key}"}
                for key, value in scalar_metrics(facts["metrics"][split]).items()
            ],
        }
        for split in ("validation", "test")
        if split in facts["metrics"]
    ]
    meta = {
        "license": entry.licence.lower() if entry else "other",
        "library_name": "keras",
        "pipeline_tag": recipe.hub_task,
        "tags": ["keras", "keras-hub", "keras-zoo", recipe.name],
    }
    if backbone.startswith("hf://"):  # a Hub repo id; catalog names and local folders are not
        meta["base_model"] = backbone.removeprefix("hf://")
    meta["model-index"] = [{"name": facts["name"], "results": results}]
    return meta


def evaluated_on(data: dict, split: str) -> dict:
    """The model-index `dataset` of a split's figures: the file they were computed on (data.json),
    and for a split carved out of the training data, that it was held out of it."""
    row = data.get(split) or {}
    train = Path(str((data.get("train") or {}).get("source", ""))).name
    name = Path(str(row.get("source", ""))).name or train or "data"
    held_out = row.get("part_of_train") or not row.get("source")
    return {
        "name": name,
        "type": name,
        "split": f"{split} (held out of {train or 'the training data'})" if held_out else split,
    }


def card_body(recipe: Any, facts: dict, pictures: Sequence[str]) -> str:
    cfg, metrics, task = facts["cfg"], facts["metrics"], facts["task"]
    backbone = _backbone(cfg)
    entry = CATALOG.get(backbone)
    labels = task.get("labels") or task.get("tags") or []
    lines = [
        f"# {facts['name']}: {recipe.name}",
        "",
        f"A `{recipe.hub_task}` model fine-tuned with keras-zoo's `{recipe.name}` recipe.",
        "",
        "## Task and labels",
        "",
        f"{len(labels)} labels: " + ", ".join(f"`{label}`" for label in labels),
        "",
        "## Backbone",
        "",
    ]
    if entry:
        lines.append(
            f"`{backbone}`: {entry.description} ({entry.params} parameters), KerasHub preset "
            f"`{entry.preset}`, licence **{entry.licence}** (keras-zoo catalog)."
        )
    else:
        lines.append(
            f"`{backbone}` (not in keras-zoo's catalog: its licence is the one its source states)."
        )
    lines += [
        f"Fine-tuning mode: `{facts['task'].get('finetune') or cfg['model'].get('finetune', 'full')}`"
        + (" (chosen by `auto`)." if cfg["model"].get("finetune") == "auto" else "."),
        "",
        "## Data",
        "",
        "| split | source | examples | SHA-256 of the source's content |",
        "|---|---|---|---|",
    ]
    for split, row in facts["data"].items():
        source = (f"`{row['source']}`" if row["source"] else "not recorded") + (
            " (part of train's source)" if row.get("part_of_train") else ""
        )
        lines.append(
            f"| {split} | {source} | {row['examples']} | {row['sha256'] or 'not fingerprinted'} |"
        )
    sample = facts["data"].get("train", {})
    if sample.get("examples_per_class"):
        lines += [
            "",
            f"Train is a sample of {sample['examples_per_class']} examples per class of its source, "
            f"drawn with seed {sample['sample_seed']} (SHA-256 of the sample's rows: "
            f"{sample['sample_sha256']}).",
        ]
    lines += [
        "",
        f"Data licence: {cfg['data'].get('licence') or 'not stated'}.",
        "",
        "## Results",
        "",
    ]
    chosen = metrics.get("chosen_epoch")
    if chosen and chosen["chosen_on"] == "none":
        lines += [
            f"Trained for a fixed budget of {chosen['of']} epochs and kept the last: no validation "
            "set chose anything (the epoch, the stopping point or a setting).",
            "",
        ]
    elif chosen:
        lines += [
            f"Kept epoch {chosen['epoch']} of {chosen['of']}, chosen by the best `{chosen['monitor']}` on "
            f"the {chosen['chosen_on']} split.",
            "",
        ]
    for split in ("validation", "test"):
        if split in metrics:
            lines += [f"### {split}", "", recipe.format_report(metrics[split]), ""]
    last = metrics.get("last_epoch", {})
    if (
        chosen
        and chosen["epoch"] != chosen["of"]
        and any(split in last for split in ("validation", "test"))
    ):
        figures = ", ".join(
            f"{split} {key} {value:.4f}"
            for split in ("validation", "test")
            for key, value in scalar_metrics(last.get(split, {})).items()
        )
        lines += [f"The last epoch ({chosen['of']}) scored: {figures}.", ""]
    lines += [f"![{Path(name).stem}]({name})" for name in pictures]
    lines += [
        "",
        "## Training hardware and precision",
        "",
        f"Trained with {format_runtime(facts['status'].get('runtime'))}.",
        "",
    ]
    lines += [
        "## How to reproduce",
        "",
        "```bash",
        reproduce_command(recipe.name, facts),
        "```",
        "",
        f"or from the resolved config below (the run's `config.yaml`): "
        f"`keras-zoo train {recipe.name} --config config.yaml --name NEW`.",
        "",
        "## Limitations",
        "",
    ]
    lines += [f"- {line}" for line in limitations(facts, recipe.name)]
    lines += [
        "",
        "## Training config (resolved)",
        "",
        "```yaml",
        facts["config_text"].rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def format_runtime(runtime: dict) -> str:
    """run.json's `runtime` in one line: what `auto` resolved to, and on which devices."""
    if not isinstance(runtime, dict) or not runtime:
        return "not recorded"
    devices = runtime.get("devices") or {}
    gpus = ", ".join(
        f"{g.get('name')} (compute capability {g.get('compute_capability')})"
        for g in devices.get("gpus") or []
    )
    cpu = (
        f"CPU {devices.get('cpu', 'unknown')} ({', '.join(devices.get('cpu_flags') or []) or 'no deciding flags'}; "
        f"bf16 {devices.get('cpu_bf16', '?')})"
    )
    replicas = runtime.get("replicas", 1)
    return (
        f"{runtime.get('precision')}, XLA {'on' if runtime.get('jit_compile') else 'off'}, "
        f"strategy {runtime.get('strategy')} ({replicas} replica{'s' if replicas != 1 else ''}), "
        f"speedups {'on' if runtime.get('speedups', True) else 'off'}; {gpus + '; ' if gpus else ''}{cpu}"
    )


def _backbone(cfg: dict) -> str:
    return str(cfg.get("model", {}).get("backbone", ""))


def reproduce_command(recipe: str, facts: dict) -> str:
    """The command that trained the run (`run.json`'s `origin`), without --overwrite / --resume."""
    origin = facts["status"].get("origin")
    if isinstance(origin, list):
        return shlex.join(arg for arg in origin if arg not in ("--overwrite", "--resume"))
    if origin:
        return f"# {origin}"
    return f"keras-zoo train {recipe} --config config.yaml"


def limitations(facts: dict, recipe: str) -> list[str]:
    metrics, task, cfg = facts["metrics"], facts["task"], facts["cfg"]
    notes = []
    chosen = metrics.get("chosen_epoch", {})
    if chosen.get("chosen_on") == "validation" and "test" not in metrics:
        notes.append(
            "The kept epoch was chosen on the validation set these figures come from, so they are "
            "slightly optimistic; `data.selection_split` chooses on held-out training data instead."
        )
    elif chosen and chosen["chosen_on"] != "none":
        notes.append(f"The kept epoch was chosen on the {chosen['chosen_on']} split.")
    if task.get("truncated_train_examples"):
        read = task.get("read_length", task.get("max_length"))
        notes.append(
            f"{task['truncated_train_examples']} training examples were longer than "
            f"{task.get('max_length')} tokens and were truncated in training; evaluation and "
            f"prediction read up to {read} tokens and truncate longer inputs."
        )
    entry = CATALOG.get(_backbone(cfg))
    # e.g. a sentence-embedding checkpoint tagging entities
    if entry and recipe in entry.usable_for:
        better = ", ".join(e.name for e in CATALOG.values() if recipe in e.tasks)
        notes.append(
            f"`{entry.name}` ({entry.description}) runs with this task but is not the usual choice; "
            f"{better} usually do better."
        )
    notes.append(
        "Evaluated only on the data above; expect lower figures on text or images unlike it."
    )
    return notes


def _write_curves(history: list[dict], monitor: str, path: Path) -> bool:
    """Loss and `monitor` per epoch, train and validation, as a PNG; False without history."""
    if not history:
        return False
    from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone
    from matplotlib.ticker import MaxNLocator

    epochs = [int(row["epoch"]) + 1 for row in history]
    fig = Figure(figsize=(9, 3.5), dpi=100)
    for ax, key in zip(fig.subplots(1, 2), ("loss", monitor.removeprefix("val_"))):
        for prefix, style in (("", "o-"), ("val_", "s--")):
            values = [
                float(row[prefix + key]) if row.get(prefix + key) else float("nan")
                for row in history
            ]
            ax.plot(epochs, values, style, label=f"{'validation' if prefix else 'train'} {key}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(key)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return True
