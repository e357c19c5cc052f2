"""Where a MiniLM-sized encoder layer's inference time goes in TensorFlow, part by part, to set
beside the peer's (benchmarks/peers/peer_encoder_layer_parts.py, the same parts of a transformers
BertLayer in PyTorch).

    python benchmarks/encoder_layer_parts.py [--batch 64] [--length 40] [--repeats 9]

One KerasHub `TransformerEncoder` as BertBackbone builds it (384 wide, 12 heads, 1536 intermediate,
tanh GELU), random weights (the speed does not depend on them), oneDNN on as for `keras-zoo
predict`; each part is a `tf.function`, timed as the median over `--repeats` rounds of 10 calls,
the parts interleaved within each round. Prints milliseconds per call.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from common import ROOT  # noqa: F401  (puts the repository on sys.path, keras-zoo's CPU settings)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    from zoo.runtime import prefer_inference_kernels

    prefer_inference_kernels()
    import keras
    import tensorflow as tf
    from keras_hub.models import BertBackbone

    keras.utils.set_random_seed(0)
    backbone = BertBackbone(
        vocabulary_size=1000,
        num_layers=1,
        num_heads=12,
        hidden_dim=384,
        intermediate_dim=1536,
        max_sequence_length=512,
    )
    layer = backbone.get_layer("transformer_layer_0")
    x = tf.random.normal([args.batch, args.length, 384])
    mask = tf.ones([args.batch, args.length], tf.bool)
    pairs = tf.logical_and(mask[:, None, :], mask[:, :, None])
    hidden = tf.random.normal([args.batch * args.length, 1536])
    attention, norm = layer._self_attention_layer, layer._self_attention_layer_norm
    intermediate, output = layer._feedforward_intermediate_dense, layer._feedforward_output_dense
    parts = {
        "layer": lambda: layer(x, padding_mask=mask, training=False),
        "self_attention": lambda: attention(query=x, value=x, attention_mask=pairs, training=False),
        "feed_forward": lambda: output(intermediate(x)),
        "feed_forward_matmuls_only": lambda: tf.matmul(
            tf.matmul(tf.reshape(x, [-1, 384]), intermediate.kernel), output.kernel
        ),
        "layer_norm": lambda: norm(x),
        "gelu_tanh_tf": lambda: tf.nn.gelu(hidden, approximate=True),
        "gelu_tanh_as_sigmoid": lambda: (
            hidden * tf.sigmoid(hidden * (1.5957691216057308 + 0.0713548162726 * tf.square(hidden)))
        ),
    }
    functions = {name: tf.function(part) for name, part in parts.items()}
    for function in functions.values():
        function()
    times = {name: [] for name in functions}
    for _ in range(args.repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            for _ in range(10):
                out = function()
            out.numpy()
            times[name].append((time.perf_counter() - start) * 100)
    print(
        "RESULT "
        + json.dumps(
            {
                "tool": "keras-zoo",
                "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
                "batch": args.batch,
                "length": args.length,
                **{name: round(statistics.median(t), 2) for name, t in times.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
