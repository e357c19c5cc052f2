"""keras-zoo recipes: one module per task behind one contract (contract.py), and the engine that
runs every task's lifecycle (engine.py: train, evaluate, predict, export), with its config,
data readers, training loop, run directories, metrics and the recipe script (cli.py)."""
