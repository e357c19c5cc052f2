"""`python tests/unpatched_fit.py mirrored|multi_worker`: fit a small model whose input has a
boolean padding mask (as every text recipe's does) under the strategy, first with Keras as it is,
then inside `zoo.keras_compat.distributed_fit()`. Prints `UNPATCHED failed: <error>` or
`UNPATCHED trained`, then `PATCHED trained, restored` (tests/test_compat.py reads them).
`multi_worker` needs TF_CONFIG naming two workers; both run this script.
"""

import sys

import numpy as np
import tensorflow as tf


def build_model():
    import keras

    ids = keras.Input((8,), dtype="int32", name="token_ids")
    mask = keras.Input((8,), dtype="bool", name="padding_mask")
    x = keras.layers.Embedding(20, 4)(ids)
    x = keras.layers.GlobalAveragePooling1D()(x, mask=mask)
    model = keras.Model({"token_ids": ids, "padding_mask": mask}, keras.layers.Dense(2)(x))
    model.compile(
        optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    return model


def dataset():
    rng = np.random.default_rng(0)
    x = {
        "token_ids": rng.integers(0, 20, (32, 8)).astype("int32"),
        "padding_mask": np.ones((32, 8), bool),
    }
    return tf.data.Dataset.from_tensor_slices((x, rng.integers(0, 2, 32))).batch(8)


def fit(strategy) -> str:
    try:
        with strategy.scope():
            model = build_model()
        model.fit(dataset(), epochs=1, verbose=0)
    except Exception as e:  # noqa: BLE001  (what Keras raises is the finding)
        return f"failed: {type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"
    return "trained"


def main(kind: str) -> None:
    if kind == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        strategy = tf.distribute.MirroredStrategy(
            [d.name for d in tf.config.list_logical_devices("CPU")]
        )
    else:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    from keras.src.backend.tensorflow import trainer

    from zoo import keras_compat

    print("UNPATCHED", fit(strategy), flush=True)
    original = trainer.reduce_per_replica
    with keras_compat.distributed_fit():
        result = fit(strategy)
    print(
        "PATCHED",
        f"{result}, restored"
        if trainer.reduce_per_replica is original
        else f"{result}, not restored",
        flush=True,
    )


if __name__ == "__main__":
    main(sys.argv[1])
