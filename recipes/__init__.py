"""keras-zoo recipes: tasks and the training lifecycle (config, data, engine, metrics, CLI)."""
