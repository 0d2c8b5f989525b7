"""sweeper: multi-objective sweeps over Vision Transformer compression.

Importing the package stays light: Ray, Optuna and MLflow are imported only once a sweep
runs (MLflow by `sweeper.tracking` alone; Ray by the driver's orchestration modules and
`sweeper.worker`).
"""

__version__ = "0.1.0"
