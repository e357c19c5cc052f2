"""Train runs in this process, on logical CPU devices: `python tests/distributed_runs.py SPEC.json`.

The spec: `{"logical_cpus": 2, "runs": [{"recipe": "sentiment", "overrides": ["key=value", ...],
"export": false}, ...]}` (`export`, default true: save and export the model, as `keras-zoo train` does;
`"freeze_all_embeddings": true` makes `model.freeze_embeddings` freeze every embedding lookup of the
backbone, the segment embedding too: those whose gradient is sparse, which Keras's AdamW and zoo's
update differently by design).
TensorFlow splits the CPU into `logical_cpus` devices before anything else runs (it cannot do so
later in a process that has run TensorFlow ops, hence a process of its own), so that
`train.distribute=mirrored` has two replicas without a GPU.
"""

import json
import sys

import tensorflow as tf


def main(spec_path: str) -> None:
    with open(spec_path) as f:
        spec = json.load(f)
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * spec["logical_cpus"]
    )
    import keras

    import zoo.heads
    from recipes import engine
    from recipes.engine.registry import load_recipe
    from zoo import keras_compat

    freeze_word_embeddings = zoo.heads.freeze_token_embeddings

    def freeze_all_embeddings(backbone) -> bool:
        for layer in keras_compat.all_layers(backbone):
            if isinstance(layer, keras.layers.Embedding):
                layer.trainable = False
        return True

    for run in spec["runs"]:
        recipe = load_recipe(run["recipe"])
        module = sys.modules[type(recipe).__module__]  # where the recipe's own name for it is bound
        module.freeze_token_embeddings = (
            freeze_all_embeddings if run.get("freeze_all_embeddings") else freeze_word_embeddings
        )
        engine.train(
            recipe,
            recipe.load_config(overrides=run["overrides"]),
            verbose=0,
            export=run.get("export", True),
        )
        print(f"trained {run['recipe']}: {run['overrides']}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
