"""What ships: a trial's compressed model as a file, and the front as registry models.

- `export`: `find_trial`, `export_onnx`, `export_torch`, `load_torch`
- `registry_models`: the front's members exported for the Model Registry (`prepare`)
"""
