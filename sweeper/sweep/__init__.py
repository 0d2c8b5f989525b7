"""The driver's sequence, from a checked config to a front.

- `driver`: `prepare`, `launch`, `resume`, `drive`
- `state`: `Prepared`, `Sweep`, `SweepOutcome`
- `preflight`: every check that can refuse a launch before a file is written
- `front`: the end of a sweep (front, test accuracy of its members, files, MLflow marks)
"""
