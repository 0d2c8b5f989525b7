"""The front's registered models as a user gets them: each alias resolved and downloaded
through MLflow's own API and run with ONNX Runtime."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import numpy as np
import onnxruntime

ALIASES = ("best-accuracy", "smallest", "fastest", "knee")


def aliases_run(uri: str, name: str, folder: Path) -> dict[str, str]:
    """Each alias resolved and downloaded through MLflow, run with ONNX Runtime: the trial
    each one serves."""
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri  # models:/ URIs resolve against the tracking store
    try:
        served = {}
        for alias in ALIASES:
            path = Path(mlflow.artifacts.download_artifacts(f"models:/{name}@{alias}"))
            pre = json.loads((path / "model.onnx.json").read_text())
            sess = onnxruntime.InferenceSession(str(path / "model.onnx"))
            x = np.zeros((2, 3, pre["img_size"], pre["img_size"]), np.float32)
            logits = sess.run(None, {"input": x})[0]
            assert logits.shape == (2, pre["num_classes"]) and np.isfinite(logits).all()
            served[alias] = pre["trial"]
        return served
    finally:
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old
