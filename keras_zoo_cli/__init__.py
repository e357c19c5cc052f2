"""The `keras-zoo` command: the recipes' train / evaluate / predict / export, plus `tune`,
`tensorboard` and `list`. It sits above `tuning` and `recipes` (setup.cfg's import-linter
contracts keep it there); see keras_zoo_cli/main.py."""
