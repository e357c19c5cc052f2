"""Keras Tuner's internals that tuning/keras_tuner_compat.py uses are still there, in the same shape.

A Keras Tuner release may move or change any of them without notice; these tests say which one,
and under which version, before a search fails half-way. No training: they build oracles only.
"""

from __future__ import annotations

import importlib
import inspect

import pytest

from tuning import keras_tuner_compat as compat

ALGORITHMS = ["random", "bayesian", "hyperband", "grid"]
VERSION = (
    f"keras-tuner {compat.INSTALLED_VERSION} (keras-zoo is tested with {compat.TESTED_VERSION})"
)


def make(algorithm: str):
    """The oracle a search of `algorithm` uses (tuning.oracles), over a two-value space."""
    import keras_tuner

    from tuning.oracles import make_oracle

    hp = keras_tuner.HyperParameters()
    hp.Choice("model.units", [4, 8])
    hp.Choice("train.learning_rate", [0.01, 0.1])
    return make_oracle(
        algorithm,
        keras_tuner.Objective("val_accuracy", "max"),
        hp,
        max_trials=4,
        seed=0,
        max_retries=0,
        hyperband_max_epochs=3,
        hyperband_factor=3,
    )


def kind(oracle) -> str:
    """Keras Tuner's class under keras-zoo's subclass, e.g. GridSearchOracle."""
    return type(oracle).__mro__[2].__name__


@pytest.mark.parametrize("module", sorted(compat.PRIVATE_IMPORTS))
def test_private_imports_exist(module):
    try:
        found = importlib.import_module(module)
    except ImportError as e:
        pytest.fail(
            f"keras_tuner_compat imports from {module}, which cannot be imported under {VERSION}: {e}"
        )
    missing = [name for name in compat.PRIVATE_IMPORTS[module] if not hasattr(found, name)]
    assert not missing, (
        f"keras_tuner_compat imports {', '.join(missing)} from {module}: gone under {VERSION}"
    )


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_oracle_attributes_exist_with_their_types(algorithm):
    oracle = make(algorithm)
    expected = {
        **compat.ORACLE_ATTRIBUTES,
        **(compat.GRID_ORACLE_ATTRIBUTES if algorithm == "grid" else {}),
    }
    for name, type_name in expected.items():
        assert hasattr(oracle, name), f"{kind(oracle)}.{name} is gone under {VERSION}"
        found = type(getattr(oracle, name))
        assert type_name in {c.__name__ for c in found.__mro__}, (
            f"{kind(oracle)}.{name} is a {found.__name__}, not a {type_name}, under {VERSION}"
        )
    assert hasattr(oracle, "max_trials"), f"{kind(oracle)}.max_trials is gone under {VERSION}"


def test_the_calls_fit_the_signatures():
    for name, function, args in compat.call_shapes(make("random"), make("grid")):
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError) as e:
            pytest.fail(f"{name}: no signature to check under {VERSION} ({e})")
        try:
            signature.bind(*args)
        except TypeError as e:
            pytest.fail(
                f"{name}: the call no longer fits {function.__qualname__}{signature} under {VERSION} ({e})"
            )


def test_the_servicer_records_a_stop():
    from keras_tuner.src.distribute.oracle_chief import OracleServicer

    oracle = make("random")
    servicer = OracleServicer(oracle)
    assert hasattr(servicer, "stop_triggered"), (
        f"OracleServicer.stop_triggered is gone under {VERSION}"
    )
    assert not compat.search_over(oracle, servicer)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_reloaded_oracle_reruns_the_started_trial_only(algorithm, tmp_path):
    """The compat functions on a real oracle: the running trial is found by its tuner id; after a
    reload (through SearchOracleMixin.reload) the finished trial stays finished and the started
    one is queued to run again."""
    oracle = make(algorithm)
    tuner = _tuner(oracle, tmp_path)
    first = oracle.create_trial("t0")
    assert compat.running_trial(oracle, "t0") is first and compat.tuners(oracle) == ["t0"], VERSION
    oracle.update_trial(first.trial_id, {"val_accuracy": 0.5})
    first.status = compat.TrialStatus.COMPLETED
    oracle.end_trial(first)
    second = oracle.create_trial("t0")
    assert second.status == compat.TrialStatus.RUNNING and compat.any_running(oracle), (
        second.status,
        VERSION,
    )
    tuner.save()

    reloaded = make(algorithm)
    _tuner(reloaded, tmp_path)
    assert compat.started_trial_ids(reloaded) == [first.trial_id, second.trial_id], VERSION
    assert not compat.any_running(reloaded), f"reload left trials running under {VERSION}"
    again = reloaded.create_trial("t1")
    assert again.trial_id == second.trial_id, (
        f"the started trial {second.trial_id} did not run again under {VERSION}"
    )


def _tuner(oracle, directory):
    class NoTrainingTuner(compat.BaseTuner):
        def run_trial(self, trial, *args, **kwargs):
            raise AssertionError("no trial runs here")

    return NoTrainingTuner(oracle=oracle, directory=str(directory), project_name="keras_tuner")


def test_keras_internals_that_zoo_keras_compat_uses_are_there(tmp_path):
    """zoo/keras_compat.py: the TensorBoard callback's private step counters and Model._flatten_layers."""
    import keras

    from zoo import keras_compat

    where = f"keras {keras.__version__} (keras-zoo is tested with {keras_compat.TESTED_VERSION})"
    callback = keras.callbacks.TensorBoard(str(tmp_path), profile_batch=(2, 4))
    for name in keras_compat.TENSORBOARD_ATTRIBUTES:
        assert hasattr(callback, name), f"keras.callbacks.TensorBoard has no {name} in {where}"
    keras_compat.continue_tensorboard_steps(callback, 100, steps=30)
    assert keras_compat.tensorboard_step(callback) == 100
    assert (callback._start_batch, callback._stop_batch) == (110, 114), where
    inner = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(3, name="inner_dense")], name="inner"
    )
    model = keras.Sequential([keras.Input((2,)), inner, keras.layers.Dense(1, name="outer_dense")])
    names = {layer.name for layer in keras_compat.all_layers(model)}
    assert {"inner", "inner_dense", "outer_dense"} <= names, (
        f"Model._flatten_layers changed in {where}: {names}"
    )
    model.compile(optimizer="adam", loss="mse")
    assert keras.models.clone_model(model).compiled, (
        f"clone_model no longer compiles its clone in {where}"
    )
    with keras_compat.uncompiled(model):
        clone = keras.models.clone_model(model)
    assert model.compiled and not clone.compiled and clone.get_compile_config() in (None, {}), where


def test_keras_trainer_functions_that_distributed_fit_replaces_are_there_and_come_back():
    """zoo/keras_compat.py `distributed_fit` replaces the TF trainer's `_maybe_symbolic_build`
    and `reduce_per_replica`, and reads the epoch iterator's `data_adapter`: they must still be
    there, with these signatures, in the installed Keras (the recipes' trainings under both
    strategies are in tests/test_distribute.py)."""
    import inspect

    import keras
    from keras.src.backend.tensorflow import trainer

    from zoo import keras_compat

    where = f"keras {keras.__version__} (keras-zoo is tested with {keras_compat.TESTED_VERSION})"
    source = inspect.getsource(trainer)
    for line in (
        "def _maybe_symbolic_build(self, iterator=None, data_batch=None):",
        "def reduce_per_replica(values, strategy, reduction):",
        "def _collective_all_reduce_multi_worker(strategy):",
        "self._maybe_symbolic_build(iterator=epoch_iterator)",
        "dataset = self.data_adapter.get_tf_dataset()",
    ):
        assert line in source, (
            f"keras/src/backend/tensorflow/trainer.py changed in {where}: no {line!r}"
        )
    originals = (trainer.TensorFlowTrainer._maybe_symbolic_build, trainer.reduce_per_replica)
    with keras_compat.distributed_fit():
        patched = (trainer.TensorFlowTrainer._maybe_symbolic_build, trainer.reduce_per_replica)
        assert patched[0] is not originals[0] and patched[1] is not originals[1]
        with keras_compat.distributed_fit():  # nested: patched once, not wrapped twice
            assert (
                trainer.TensorFlowTrainer._maybe_symbolic_build,
                trainer.reduce_per_replica,
            ) == patched
        assert (
            trainer.TensorFlowTrainer._maybe_symbolic_build,
            trainer.reduce_per_replica,
        ) == patched
    assert (
        trainer.TensorFlowTrainer._maybe_symbolic_build,
        trainer.reduce_per_replica,
    ) == originals
    with pytest.raises(RuntimeError, match="mid-training"):  # restored whatever ends the block
        with keras_compat.distributed_fit():
            raise RuntimeError("mid-training")
    assert (
        trainer.TensorFlowTrainer._maybe_symbolic_build,
        trainer.reduce_per_replica,
    ) == originals


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_keras_still_needs_the_distributed_fit_patch_under_both_strategies(tmp_path):
    """tests/unpatched_fit.py fits a model with a boolean padding mask under each strategy without
    zoo's patch, then with it. Unpatched must fail as keras-team/keras#20329 / #20585 describe;
    once it trains, this test fails: delete `keras_compat.distributed_fit` and its use in
    recipes/engine/distribute.py. Patched must train (and the patch be gone after the block)."""
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = str(ROOT / "tests" / "unpatched_fit.py")
    mirrored = subprocess.run(
        [sys.executable, script, "mirrored"], capture_output=True, text=True, env=env, timeout=300
    )
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = [
        subprocess.Popen(
            [sys.executable, script, "multi_worker"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={
                **env,
                "TF_CONFIG": json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": i}}
                ),
            },
        )
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=300) for w in workers]
    for name, (out, err) in [
        ("mirrored", (mirrored.stdout, mirrored.stderr)),
        *(("worker", o) for o in outputs),
    ]:
        results = dict(
            line.split(" ", 1)
            for line in out.splitlines()
            if line.startswith(("UNPATCHED", "PATCHED"))
        )
        assert "UNPATCHED" in results, (name, out, err[-3000:])
        assert results["UNPATCHED"].startswith("failed"), (
            f"{name}: Keras now trains unpatched; delete zoo.keras_compat.distributed_fit ({results['UNPATCHED']})"
        )
        assert results.get("PATCHED") == "trained, restored", (name, out, err[-3000:])
