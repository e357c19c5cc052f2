"""keras-zoo recipes: the engine (engine/: the run lifecycle every task shares), what tasks share
(common/), and one package per task (sentiment/, image_classification/, ner/), each holding its
recipe and the code only it uses. `python -m recipes.<task>` is a task's own command line."""
