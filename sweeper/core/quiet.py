"""Silence third-party chatter that says nothing to a sweeper user (deprecations of APIs we
pin, database migrations, study creation); real errors still surface."""

from __future__ import annotations

import logging
import warnings

_MESSAGES = (
    ".*TypedStorage is deprecated.*",
    ".*quantize_per_tensor.*deprecated.*",
    ".*torch.ao.quantization is deprecated.*",
)


def quiet_third_party() -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for pattern in _MESSAGES:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("mlflow", "alembic", "optuna", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # On resume, Tune warns about trials killed mid-run having no results yet; it reruns them.
    logging.getLogger("ray.tune.analysis").setLevel(logging.ERROR)
    # Optuna resets its own logger when imported: sweeper.search.quiet_optuna, on the driver
