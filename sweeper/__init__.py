"""sweeper: multi-objective sweeps over Vision Transformer compression.

Importing the package stays light: ray and mlflow are imported only by
`sweeper.orchestrate` and `sweeper.tracking`.
"""

__version__ = "0.1.0"
