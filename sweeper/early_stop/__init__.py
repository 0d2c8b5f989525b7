"""Successive halving of trials that train, at rung epochs.

- `board`: the driver's side (the rung board actor), `enabled`, `start`
- `watch`: the trial's side (evaluate at a rung, ask, stop)
- `_decide` (private, used by `board`): the rung decision (non-dominated rank, crowding
  distance)
"""
