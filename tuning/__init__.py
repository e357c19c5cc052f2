"""keras-zoo hyperparameter search with Keras Tuner (see the tuning issue; not built yet)."""
