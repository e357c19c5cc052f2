"""`python -m recipes.ner`: the recipe's own command line (recipes/engine/cli.py)."""

from recipes.engine.cli import script_main

raise SystemExit(script_main("ner"))
