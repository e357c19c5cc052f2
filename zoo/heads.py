"""Task heads on top of KerasHub backbones, and the fine-tuning modes."""

from __future__ import annotations

import os
import tempfile
import warnings
from typing import Literal

import keras

from zoo import keras_compat
from zoo.image_inputs import input_size, normalisation


def text_classifier(
    backbone, num_classes: int, dropout: float = 0.1, pooling: Literal["mean", "cls"] = "mean"
) -> keras.Model:
    """Backbone -> pooled sentence vector -> dropout -> dense logits.

    `mean` averages the sequence output over real tokens (how sentence-transformers checkpoints
    such as MiniLM were trained); `cls` uses the backbone's pooled `[CLS]` output (BERT's own head).
    """
    inputs = backbone.input
    outputs = backbone(inputs)
    if pooling == "cls":
        if not (isinstance(outputs, dict) and "pooled_output" in outputs):
            raise ValueError(f"{type(backbone).__name__} has no pooled output; use pooling 'mean'")
        pooled = outputs["pooled_output"]
    else:
        for layer in backbone.layers:  # BERT's [CLS] pooler is unused here: keep it out of training
            if layer.name == "pooled_dense":
                layer.trainable = False
        sequence = outputs["sequence_output"] if isinstance(outputs, dict) else outputs
        pooled = keras.layers.GlobalAveragePooling1D(name="mean_pool")(
            sequence, mask=inputs["padding_mask"]
        )
    x = keras.layers.Dropout(dropout, name="head_dropout")(pooled)
    # float32 under mixed precision
    logits = keras.layers.Dense(num_classes, name="logits", dtype="float32")(x)
    return keras.Model(inputs, logits, name="text_classifier")


def token_classifier(backbone, num_tags: int, dropout: float = 0.1) -> keras.Model:
    """Backbone -> sequence output -> dropout -> dense logits for every token (KerasHub has no
    token-classification task)."""
    inputs = backbone.input
    for layer in backbone.layers:  # BERT's [CLS] pooler is unused: keep it out of training
        if layer.name == "pooled_dense":
            layer.trainable = False
    outputs = backbone(inputs)
    sequence = outputs["sequence_output"] if isinstance(outputs, dict) else outputs
    x = keras.layers.Dropout(dropout, name="head_dropout")(sequence)
    logits = keras.layers.Dense(num_tags, name="logits", dtype="float32")(x)
    return keras.Model(inputs, logits, name="token_classifier")


def image_classifier(backbone, num_classes: int, converter, dropout: float = 0.2) -> keras.Model:
    """Pixels (0..255, the converter's square input size) -> the converter's normalisation ->
    backbone -> pooled features -> dropout -> dense logits.

    The normalisation is the model's first layer, so the Keras model, the SavedModel and the TFLite
    model all take plain pixels. Feature maps are average-pooled; token sequences (ViT) use the
    class token.
    """

    size = input_size(converter)
    scale, offset = normalisation(converter)
    inputs = keras.Input((size, size, 3), name="pixels")
    x = keras.layers.Rescaling(scale, offset, name="normalise", dtype="float32")(inputs)
    features = backbone(x)
    if len(features.shape) == 4:
        pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
    else:
        pooled = features[:, 0]
    x = keras.layers.Dropout(dropout, name="head_dropout")(pooled)
    logits = keras.layers.Dense(num_classes, name="logits", dtype="float32")(x)
    return keras.Model(inputs, logits, name="image_classifier")


def head_features(model: keras.Model, with_logits: bool = False) -> keras.Model:
    """The same model (same weights) giving what its head sees: the pooled sentence or image vector,
    or each token's vector (the input of the `head_dropout` layer every head here has); with
    `with_logits`, `[logits, features]` from one pass. For the embedding projector."""
    features = model.get_layer("head_dropout").input
    return keras.Model(
        model.input,
        [model.output, features] if with_logits else features,
        name=f"{model.name}_features",
    )


def split_at_head(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """`(features, head)`: the model up to what its head sees (`head_features`) and the head alone
    (its `head_dropout` and `logits` layers, the same objects, so the same weights) taking those
    features as input. Training `head` on features computed once by `features` trains `model`'s
    head: the standard transfer-learning recipe for a frozen backbone.

        >>> features, head = split_at_head(model)  # doctest: +SKIP
        >>> head.fit(features.predict(images), labels)  # doctest: +SKIP
    """
    dropout, logits = model.get_layer("head_dropout"), model.get_layer("logits")
    inputs = keras.Input(tuple(dropout.input.shape[1:]), name="features")
    return head_features(model), keras.Model(
        inputs, logits(dropout(inputs)), name=f"{model.name}_head"
    )


def backbone_blocks(backbone) -> list[list]:
    """The backbone's layers that hold weights, grouped into blocks in input-to-output order.

    A block is a run of layers sharing a name prefix (`block6a_expand_conv`, `block6a_bn` ->
    `block6a`), which is how KerasHub names the stages of its CNN backbones.
    """
    blocks: dict[str, list] = {}
    for layer in backbone.layers:
        if layer.weights:
            blocks.setdefault(layer.name.split("_")[0], []).append(layer)
    return list(blocks.values())


def unfreeze_top(backbone, num_blocks: int = 0, train_batchnorm: bool = False) -> None:
    """Make the top `num_blocks` blocks trainable (0: the whole backbone), the rest frozen.

    BatchNorm layers stay frozen (inference mode: Keras runs a non-trainable BatchNormalization
    with its moving statistics) unless `train_batchnorm`: small fine-tuning batches would
    otherwise overwrite the ImageNet statistics.
    """
    backbone.trainable = True
    blocks = backbone_blocks(backbone)
    frozen = blocks[:-num_blocks] if 0 < num_blocks < len(blocks) else []
    for block in frozen:
        for layer in block:
            layer.trainable = False
    if not train_batchnorm:
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False


def set_finetune_mode(
    backbone, mode: Literal["full", "frozen", "lora"], lora_rank: int = 8
) -> None:
    """`full` trains everything, `frozen` only the head, `lora` low-rank adapters in the backbone
    (KerasHub's `enable_lora`) plus the head."""
    if mode == "frozen":
        backbone.trainable = False
    elif mode == "lora":
        backbone.enable_lora(rank=lora_rank)
    elif mode != "full":
        raise ValueError(f"unknown fine-tuning mode {mode!r}")


def freeze_token_embeddings(backbone) -> bool:
    """Keep a text backbone's word-embedding matrix fixed; returns whether it had one.

    The vocabulary matrix is half of a small encoder's weights (MiniLM-L6: 11.7M of 22.7M), yet a
    batch of short sentences touches a few hundred of its rows: training it makes AdamW update
    the whole matrix every step. Frozen, fine-tuning steps are about 9% faster (measured on
    MiniLM-L6 at lengths 16-48), at some cost in accuracy (SST-2: 89.0 vs 90.4).
    """
    layer = getattr(backbone, "token_embedding", None)
    if layer is None:
        return False
    layer.trainable = False
    return True


def synchronize_batch_norm(model: keras.Model, synchronized: bool) -> None:
    """Make the model's BatchNormalization layers compute training statistics over the whole
    global batch (all replicas of a `tf.distribute` strategy) instead of each replica's part, so
    that training on R replicas computes what one device computes."""
    for layer in keras_compat.all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = synchronized


def inference_copy(model: keras.Model) -> keras.Model:
    """The model as evaluation, prediction and export use it: a float32 copy, on one device, with
    plain Keras layers and no optimizer.

    Mixed precision speeds up training; evaluation, prediction and export run in float32 so that
    every path (Keras, SavedModel) gives the same probabilities whatever the batch padding. A model
    trained under a `tf.distribute` strategy is copied out of it too (call this outside the
    strategy's scope), so that they give exactly what one device gives. The copy is never
    compiled, so the `model.keras` saved from it names no training optimizer or schedule and loads
    with plain Keras (`keras.saving.load_model(path)`, default arguments).
    """

    def rebuild(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    with keras_compat.uncompiled(model):  # `clone_model` would compile the clone as the original is
        clone = keras.models.clone_model(model, clone_function=rebuild)
    # Through a weights file rather than get/set_weights: Keras saves LoRA layers with their
    # adapters merged into the kernels, which is what the plain float32 clone holds.
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # The file carries the optimizer state too; the inference copy does not want it.
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        path = os.path.join(tmp, "model.weights.h5")
        model.save_weights(path)
        clone.load_weights(path)
    return clone
