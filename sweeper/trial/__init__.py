"""One trial as a pure function of its inputs (no Ray, no MLflow).

- `run`: `TrialInputs`, `run_trial`, `build_baseline`, `evaluate_artifact`
"""
