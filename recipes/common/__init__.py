"""What several tasks read and score alike: labels and splits (labels.py), text and TFDS readers,
classification metrics and their pictures (metrics.py). It imports neither the engine nor a task."""
