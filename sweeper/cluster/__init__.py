"""Everything Ray: the driver's Tune run, the trial actor, and the local stack.

- `orchestrate`: `init_ray`, `run_tune` (takes a `TuneJob`), `shutdown`
- `worker`: `trainable`, the function each Ray trial runs (imports neither MLflow nor Optuna)
- `trial_records`: the Tune callback writing trials.jsonl and one MLflow child run per trial
- `resources`: this machine's CPUs and driver threads, whether a trial fits a node
- `stop_signal`: SIGTERM as Ctrl-C, the stop watchdog, Tune's handlers put back
- `tune_fixes`: narrow fixes to Ray Tune 2.60's failure handling
- `stack`: `python -m sweeper stack` (PostgreSQL, MLflow server, Ray head on this machine)
"""
