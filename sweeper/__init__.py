"""sweeper: multi-objective sweeps over Vision Transformer compression.

Importing the package stays light: Ray, Optuna and MLflow are imported only once a sweep
runs (MLflow by `sweeper.tracking` alone; Ray by the driver's orchestration modules and
`sweeper.worker`), torch and timm only when `launch` or `resume` is first used.

    import sweeper
    outcome = sweeper.launch("hybrid", model=my_vit, overrides=["search.trials=24"])
    print(outcome.front)            # the table the CLI prints
"""

from typing import Any

from sweeper.core.errors import UserError

__version__ = "0.1.0"
__all__ = ["UserError", "launch", "resume"]


def __getattr__(name: str) -> Any:
    if name in ("launch", "resume"):  # sweeper.api imports torch and timm
        from sweeper import api

        return getattr(api, name)
    raise AttributeError(f"module 'sweeper' has no attribute {name!r}")
