"""Turn encoded image bytes into a backbone's input pixels, inside the TensorFlow graph.

One decoding path serves training (tf.data), evaluation, `predict` and the exported SavedModel,
so every one of them sees the same pixels:

    bytes --decode_rgb--> uint8 RGB (any format, any channel count)
          --square_resize--> uint8 side x side (centre square, resized once and cached)
          --center_crop--> image_size (evaluation) / random resized crop (training)

Pixel values stay in 0..255 until the model: its first layer applies the backbone's own
normalisation (`normalisation(converter)`), so a model takes plain pixels wherever it runs.

Example:
    >>> pixels = square_resize(decode_rgb(tf.io.read_file("ant.jpg"), 256), 256)  # doctest: +SKIP
    >>> center_crop(pixels[tf.newaxis], 224).shape  # doctest: +SKIP
    TensorShape([1, 224, 224, 3])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from zoo.progress import predict_callbacks, progress

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


# What an image may decode to, at most (64 M pixels: 192 MB as uint8 RGB, 384 MB as the uint16 a PNG
# is decoded at). A 12,000 x 12,000 PNG of 420 KB on disk would otherwise take 3.5 GB to decode.
MAX_DECODED_PIXELS = 64_000_000


def declared_size(head: bytes) -> tuple[int, int] | None:
    """`(width, height)` that an image file's first bytes declare (JPEG: its frame header, so pass
    enough bytes to reach it; PNG, GIF, BMP, WebP: the first 30), None where they declare none.
    Not Pillow's `Image.open(...).size`: past 179 M pixels it raises instead of telling the size,
    unless a process-wide limit is changed."""
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        return int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    if head[:2] == b"BM" and len(head) >= 26:
        return (
            abs(int.from_bytes(head[18:22], "little", signed=True)),
            abs(int.from_bytes(head[22:26], "little", signed=True)),
        )
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(head) >= 30:
        chunk = head[12:16]
        if chunk == b"VP8X":
            return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(
                head[27:30], "little"
            ) + 1
        if chunk == b"VP8L":
            bits = int.from_bytes(head[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8 ":
            return int.from_bytes(head[26:28], "little") & 0x3FFF, int.from_bytes(
                head[28:30], "little"
            ) & 0x3FFF
    if head[:3] == JPEG_MAGIC:
        i = 2
        while i + 9 <= len(head) and head[i] == 0xFF:
            marker, length = head[i + 1], int.from_bytes(head[i + 2 : i + 4], "big")
            # a start-of-frame segment
            if 0xC0 <= marker <= 0xCF and marker not in (
                0xC4,
                0xC8,
                0xCC,
            ):
                return int.from_bytes(head[i + 7 : i + 9], "big"), int.from_bytes(
                    head[i + 5 : i + 7], "big"
                )
            i += 2 + length
    return None


def decoded_pixels(head: bytes, min_side: int) -> int | None:
    """How many pixels `decode_rgb` would decode the image with this header to (a JPEG at the
    reduced scale it picks), None where the header declares no size."""
    size = declared_size(head)
    if size is None:
        return None
    width, height = size
    if head[:3] == JPEG_MAGIC:
        ratio = [1, 2, 4, 8][sum(min(width, height) >= min_side * k for k in (2, 4, 8))]
        width, height = -(-width // ratio), -(-height // ratio)
    return width * height


def decode_rgb(encoded: tf.Tensor, min_side: int) -> tf.Tensor:
    """uint8 `[H, W, 3]` from JPEG, PNG (8 or 16 bit), GIF (first frame), BMP or WebP bytes.

    Greyscale, RGBA and CMYK become RGB. Large JPEGs are decoded at 1/2, 1/4 or 1/8 scale in the DCT
    domain when their short side stays >= `min_side`: a 6000x4000 photo decodes 16x faster that way.
    Raises (an op error) on bytes that are not a decodable image.
    """

    def jpeg():
        shape = tf.image.extract_jpeg_shape(encoded)
        short = tf.minimum(shape[0], shape[1])
        # the largest of 1, 2, 4, 8 with short / ratio >= min_side
        level = tf.reduce_sum(tf.cast(short >= min_side * tf.constant([2, 4, 8]), tf.int32))
        return tf.switch_case(
            level,
            [lambda r=r: tf.io.decode_jpeg(encoded, channels=3, ratio=r) for r in (1, 2, 4, 8)],
        )

    def png():
        # As uint16, 16-bit PNGs keep their precision until the rounding here; 8-bit ones come back x257.
        image = tf.io.decode_png(encoded, channels=3, dtype=tf.uint16)
        return tf.cast(tf.math.round(tf.cast(image, tf.float32) / 257.0), tf.uint8)

    def other():  # GIF, BMP, WebP
        return tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)

    magic = tf.strings.substr(encoded, 0, 4)
    image = tf.case(
        [
            (tf.equal(tf.strings.substr(magic, 0, 3), JPEG_MAGIC), jpeg),
            (tf.equal(magic, PNG_MAGIC), png),
        ],
        default=other,
    )
    image.set_shape([None, None, 3])
    return image


def square_resize(image: tf.Tensor, side: int, interpolation: str = "bilinear") -> tf.Tensor:
    """The largest centred square of `image`, resized to `side` x `side`, as uint8.

    The same crop-to-aspect-ratio a KerasHub image converter does, so objects keep their shape.
    """
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    s = tf.minimum(h, w)
    square = image[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    resized = tf.image.resize(square, [side, side], method=interpolation, antialias=True)
    return tf.cast(tf.clip_by_value(tf.math.round(resized), 0, 255), tf.uint8)


def center_crop(images: tf.Tensor, size: int) -> tf.Tensor:
    """The central `size` x `size` window of a batch of square images, as float32 pixels."""
    side = tf.shape(images)[1]
    start = (side - size) // 2
    return tf.cast(images[:, start : start + size, start : start + size], tf.float32)


def random_resized_crop(
    images: tf.Tensor,
    size: int,
    scale: tuple[float, float],
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    seed: int | None = None,
) -> tf.Tensor:
    """Inception-style augmentation: per image, a random window covering `scale` of the area with
    an aspect ratio in `ratio`, resized to `size`. Batched with one `crop_and_resize` call.

    Keras has RandomCrop and RandomZoom but no random *resized* crop, the standard ImageNet
    fine-tuning augmentation; hence this function.
    """
    n = tf.shape(images)[0]
    area = tf.random.uniform([n], scale[0], scale[1], seed=seed)
    log_ratio = tf.random.uniform([n], tf.math.log(ratio[0]), tf.math.log(ratio[1]), seed=seed)
    aspect = tf.exp(log_ratio)
    h = tf.minimum(tf.sqrt(area / aspect), 1.0)
    w = tf.minimum(tf.sqrt(area * aspect), 1.0)
    y0 = tf.random.uniform([n], seed=seed) * (1.0 - h)
    x0 = tf.random.uniform([n], seed=seed) * (1.0 - w)
    boxes = tf.stack([y0, x0, y0 + h, x0 + w], axis=1)
    return tf.image.crop_and_resize(tf.cast(images, tf.float32), boxes, tf.range(n), [size, size])


def normalisation(converter) -> tuple[list[float] | float, list[float] | float]:
    """`(scale, offset)` of a KerasHub image converter: pixels -> `pixels * scale + offset`."""
    scale = converter.scale if converter.scale is not None else 1.0
    offset = converter.offset if converter.offset is not None else 0.0
    return scale, offset


def input_size(converter) -> int:
    """The backbone's square input side, from its image converter."""
    size = converter.image_size
    if not size or size[0] is None or size[0] != size[1]:
        raise ValueError(f"image converter has no square input size ({size})")
    return int(size[0])


def augmentation(cfg, image_size: int, seed: int):
    """A tf.data map function for training batches: random resized crop (or centre crop), then
    the Keras augmentation layers switched on in `cfg` (a recipe's augment section: crop_scale,
    flip, rotation, zoom, rand_augment, mixup, cutmix), then MixUp / CutMix on the labels.
    `cfg` None: centre crops only, as evaluation sees the images."""
    if cfg is None:
        return lambda images, labels: (center_crop(images, image_size), labels)
    if len(cfg.crop_scale) != 2 or not 0 < cfg.crop_scale[0] <= cfg.crop_scale[1] <= 1:
        raise ValueError(
            f"augment.crop_scale must be [low, high] with 0 < low <= high <= 1, not {cfg.crop_scale}"
        )
    layers = []
    if cfg.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if cfg.rotation:
        layers.append(keras.layers.RandomRotation(cfg.rotation, fill_mode="reflect", seed=seed))
    if cfg.zoom:
        layers.append(keras.layers.RandomZoom(cfg.zoom, fill_mode="reflect", seed=seed))
    if cfg.rand_augment:
        layers.append(keras.layers.RandAugment(value_range=(0, 255), seed=seed))
    mixers = ([keras.layers.MixUp(alpha=cfg.mixup, seed=seed)] if cfg.mixup else []) + (
        [keras.layers.CutMix(factor=cfg.cutmix, seed=seed)] if cfg.cutmix else []
    )

    def augment(images, labels):
        if tuple(cfg.crop_scale) == (1.0, 1.0):
            x = center_crop(images, image_size)
        else:
            x = random_resized_crop(images, image_size, tuple(cfg.crop_scale))
        for layer in layers:
            x = layer(x, training=True)
        if mixers:

            def mix(layer):
                return lambda: tuple(layer({"images": x, "labels": labels}, training=True).values())

            if len(mixers) == 1:
                x, labels = mix(mixers[0])()
            else:
                x, labels = tf.cond(tf.random.uniform([]) < 0.5, mix(mixers[0]), mix(mixers[1]))
        return tf.clip_by_value(x, 0.0, 255.0), labels

    return augment


def augmented_batches(
    images, y: np.ndarray, num_classes: int, batch_size: int, seed: int, augment, image_size: int
):
    """Shuffled, augmented batches of (pixels, one-hot labels) from decoded images (`images.dataset`)."""
    onehot = np.eye(num_classes, dtype=np.float32)[y]
    ds = images.dataset(onehot, shuffle_seed=seed).batch(batch_size)
    # One batch at a time: the augmentation's random ops are stateful, so batches augmented in
    # parallel drew their crops and flips in whatever order the threads ran, and the same seed gave
    # another run (hymenoptera: 92.16 against 92.81% in two runs of the same code). Prefetching
    # still overlaps it with the training step.
    ds = ds.map(augmentation(augment, image_size, seed))
    return ds.prefetch(tf.data.AUTOTUNE)


def cropped_batches(
    images, y: np.ndarray | None, num_classes: int, image_size: int, batch_size: int
):
    """Centre-cropped batches, in order (with one-hot labels when `y` is given)."""
    if y is None:
        ds = images.dataset().batch(batch_size).map(lambda x: center_crop(x, image_size))
    else:
        ds = images.dataset(np.eye(num_classes, dtype=np.float32)[y]).batch(batch_size)
        ds = ds.map(lambda x, t: (center_crop(x, image_size), t))
    return ds.prefetch(tf.data.AUTOTUNE)


def feature_batches(
    features: np.ndarray, y: np.ndarray, num_classes: int, batch_size: int, seed: int | None = None
):
    """Batches of (features, one-hot labels) computed once from decoded images: with `seed`,
    shuffled exactly as `augmented_batches` shuffles those images (tf.data's permutation depends
    on the seed and the count alone), else in order, as `cropped_batches` gives them."""
    ds = tf.data.Dataset.from_tensor_slices((features, np.eye(num_classes, dtype=np.float32)[y]))
    if seed is not None:
        ds = ds.shuffle(len(features), seed=seed)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def model_outputs(model, images, batch_size: int = 32) -> np.ndarray:
    """`model`'s outputs for decoded images (centre crops), in their order, in float32, from one
    traced inference call per batch (with a progress bar): not Keras's `predict`, whose
    distributed step fails under a `tf.distribute` strategy when a replica's share of the last
    batch is empty, and the frozen features of a run are computed inside its strategy's scope."""
    size = int(model.input.shape[1])
    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    batches = cropped_batches(images, None, 0, size, batch_size)
    steps = -(-len(images) // batch_size)
    outputs = [np.asarray(forward(x), "float32") for x in progress(batches, steps, "features")]
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), "float32")


def predict_probabilities(model, images, batch_size: int = 32) -> np.ndarray:
    """Class probabilities for decoded images, in their order (centre crops)."""
    logits = model.predict(
        cropped_batches(images, None, 0, int(model.input.shape[1]), batch_size),
        verbose=0,
        callbacks=predict_callbacks(-(-len(images) // batch_size)),
    )
    return keras.ops.convert_to_numpy(keras.ops.softmax(logits.astype("float32"), axis=-1))


def save_run_assets(path, converter, undecodable: Sequence[str]) -> None:
    """What an image run keeps beside its model: the backbone's KerasHub image converter (a preset
    export carries it, for plain KerasHub users of the backbone; the run's own model normalises
    pixels in its first layer), and the files that did not decode (undecodable.txt)."""
    converter.save_to_preset(str(Path(path) / "image_converter"))
    (Path(path) / "undecodable.txt").write_text("".join(f"{origin}\n" for origin in undecodable))
