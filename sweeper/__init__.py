"""sweeper: multi-objective sweeps over Vision Transformer compression.

Importing the package stays light: Ray, Optuna and MLflow are imported only once a sweep
runs (MLflow by `sweeper.tracking` alone; Ray by `sweeper.cluster`), torch and timm only when
`launch`, `resume` or `load_torch` is first used.

    import sweeper
    outcome = sweeper.launch("hybrid", model=my_vit, overrides=["search.trials=24"])
    print(outcome.front)            # the table the CLI prints
    model = sweeper.load_torch("trial.pt")   # a file `python -m sweeper export format=torch` wrote
"""

from typing import Any

from sweeper.core.errors import UserError

__version__ = "0.1.0"
__all__ = ["UserError", "launch", "load_torch", "resume"]


def __getattr__(name: str) -> Any:
    # imported on first use: sweeper.api and sweeper.deploy import torch and timm
    if name in ("launch", "resume"):
        from sweeper import api

        return getattr(api, name)
    if name == "load_torch":
        from sweeper.deploy.export import load_torch

        return load_torch
    if name == "export":  # `sweeper.export.load_torch(path)`, as exports printed before 0.1
        from sweeper.deploy import export

        return export
    raise AttributeError(f"module 'sweeper' has no attribute {name!r}")
