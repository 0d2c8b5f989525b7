"""Multi-objective successive halving for trials that train, on the driver's side.

Ray Tune's schedulers rank trials on one scalar and Optuna cannot prune multi-objective
studies; this stops a training trial that cannot reach the front. A trial reaching a rung
(after `search.rungs` epochs of its training stage) asks the sweep's `RungBoard`, a named
Ray actor the driver starts, whether to continue (sweeper.rungs decides on every point
reported at that rung so far, as asynchronous successive halving does). The question is a
synchronous actor call, so it works the same with any concurrency and from any node, and
the trial trains no further while the answer is on its way.

A stopped trial reports its rung point (accuracy so far, size, latency ratio) with
`stopped_at_rung`: MLflow keeps it as a finished child run with those partial metrics, the
Optuna study marks it PRUNED (sweeper.search: why that does not mislead the sampler), and it
never enters the front or the hypervolume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sweeper.early_stop import _decide as rungs

if TYPE_CHECKING:
    from sweeper.core.config import Config
    from sweeper.spaces.space import Space

# technique -> the field holding its training epochs (quantize only trains with method lsq)
TRAINING = {"recover": "epochs", "distill": "epochs", "quantize": "lsq_epochs"}
STOPPED = "stopped_at_rung"


def trains_always(space: Space) -> bool:
    """Whether every configuration of the space has a training stage: a technique always on
    whose epochs are above zero for every value the space allows."""
    from sweeper import compress  # torch: this module is also the search package's (STOPPED)

    for tech in space.techniques:
        field = TRAINING.get(tech.name)
        searched = {p.name.split(".", 1)[1]: p for p in tech.searched}
        if field is None or "enabled" in searched or tech.fixed.get("enabled", True) is False:
            continue
        if tech.name == "quantize" and (tech.fixed.get("method") != "lsq"):
            continue
        if field in searched:
            p = searched[field]
            least = min(p.choices) if p.kind == "choices" else p.low
        else:
            least = tech.fixed.get(field, compress.display_fields(tech.name)[field][0])
        if least > 0:
            return True
    return False


def enabled(cfg: Config, space: Space) -> bool:
    mode = cfg.search.early_stop
    return mode in ("on", "observe") or (mode == "auto" and trains_always(space))


class RungBoard:
    """Every point reported at every rung of one sweep (a Ray actor on the driver's node)."""

    def __init__(self, eta: int) -> None:
        self.eta = eta
        self.points: dict[int, dict[str, tuple[float, ...]]] = {}

    def report(self, trial_id: str, rung: int, point: tuple[float, ...]) -> bool:
        """Record the point (a rerun trial replaces its own) and answer: continue?"""
        at = self.points.setdefault(rung, {})
        at[trial_id] = tuple(point)
        return rungs.decide(at, trial_id, self.eta)

    def snapshot(self) -> dict[int, dict[str, tuple[float, ...]]]:
        return self.points


@dataclass(frozen=True)
class Rungs:
    """What a worker needs: the rung epochs and the board (an actor handle)."""

    epochs: tuple[int, ...]
    board: Any
    observe: bool = False

    def plan(self, trial_id: str) -> Any:
        import ray

        from sweeper.early_stop.watch import RungPlan  # torch, as above

        board = self.board

        def ask(rung: int, point: tuple[float, float, float]) -> bool:
            return bool(ray.get(board.report.remote(trial_id, rung, point)))

        return RungPlan(self.epochs, ask, self.observe)


def start(cfg: Config, space: Space, sweep_name: str) -> Rungs | None:
    """The sweep's board when early stopping is on for it, else None."""
    if not enabled(cfg, space):
        return None
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    actor = ray.remote(num_cpus=0)(RungBoard).options(
        name=f"sweeper-rungs-{sweep_name}", get_if_exists=True,
        # on the driver's node: it lives and dies with the sweep's driver
        scheduling_strategy=NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False),
    ).remote(cfg.search.eta)
    return Rungs(tuple(cfg.search.rungs), actor, cfg.search.early_stop == "observe")


def split(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(trials that finished, trials stopped at a rung): only the former have final values."""
    return ([r for r in rows if STOPPED not in r], [r for r in rows if STOPPED in r])
