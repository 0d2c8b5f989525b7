"""Every MLflow call (nothing else in sweeper imports mlflow; an import contract checks).

- `client`: `Tracker`, the background writer (`Mirror`), pending writes, experiments
- `registry`: the Model Registry: ONNX flavor folders, versions and aliases
"""
