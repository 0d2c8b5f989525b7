"""Search spaces: the YAML format, its validation, Optuna define-by-run.

- `space`: `load_space`, `available`, `check_against_model`, `Space`; the built-in spaces
  are the repository's top-level search_spaces/, installed as `sweeper.search_spaces`
"""
