"""The rung decision of multi-objective successive halving, on synthetic points, and the
trial's side of it on a real (tiny) training stage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sweeper import compress
from sweeper.compress.recover import RecoverConfig
from sweeper.core.config import build_config
from sweeper.early_stop import _decide as rungs
from sweeper.early_stop import board as early_stop
from sweeper.early_stop.watch import RungPlan, StoppedAtRung, hook
from sweeper.models.vit import create_model
from sweeper.results.pareto import non_dominated
from sweeper.spaces.space import load_space

SENSES = ["max", "min", "min"]  # (val acc, size, latency ratio)


def _points(rng: np.random.Generator, n: int) -> dict[str, tuple[float, float, float]]:
    return {f"t{i:02d}": (float(rng.uniform(0.1, 1)), float(rng.uniform(0.1, 2)),
                          float(rng.uniform(0.3, 2))) for i in range(n)}


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("eta", [2, 3, 4, 8])
def test_a_trial_no_one_dominates_is_never_stopped(seed: int, eta: int) -> None:
    rng = np.random.default_rng(seed)
    points = _points(rng, int(rng.integers(2, 30)))
    names = sorted(points)
    front = non_dominated(np.array([points[t] for t in names]), SENSES)
    for trial, on_front in zip(names, front, strict=True):
        kept = rungs.decide(points, trial, eta)
        if on_front:
            assert kept, (trial, points)
    kept = sum(rungs.decide(points, t, eta) for t in names)
    assert kept >= min(len(names), -(-len(names) // eta))  # at least the top 1/eta


def test_a_trial_dominated_by_many_is_stopped() -> None:
    points = {f"good{i}": (0.9 + 0.01 * i, 0.5 - 0.01 * i, 1.0 + 0.01 * i) for i in range(5)}
    points["bad"] = (0.5, 0.9, 1.5)  # worse than every other trial on all three
    assert not rungs.decide(points, "bad", eta=2)
    assert not rungs.decide(points, "bad", eta=3)
    assert all(rungs.decide(points, t, eta=3) for t in points if t != "bad")


def test_too_few_trials_at_a_rung_all_continue() -> None:
    points = {"a": (0.9, 0.5, 1.0), "b": (0.1, 0.9, 1.9)}  # b is dominated
    assert rungs.decide(points, "b", eta=3)  # 2 < eta: too little to judge
    assert not rungs.decide(points, "b", eta=2)


def test_crowding_keeps_the_ends_of_a_rank_first() -> None:
    # four points of the second rank on a line; only ceil(8/2) = 4 places, 3 taken by rank 0
    first = {f"f{i}": (0.95 + 0.01 * i, 0.30 - 0.1 * i, 0.5 + 0.1 * i) for i in range(3)}
    second = {f"s{i}": (0.8, 0.6 + 0.1 * i, 1.6 - 0.1 * i) for i in range(5)}
    points = {**first, **second}
    kept = {t for t in points if rungs.decide(points, t, eta=2)}
    assert set(first) <= kept and len(kept) == 4
    assert kept - set(first) <= {"s0", "s4"}  # an end of the rank, not its middle


def test_spaces_whose_every_configuration_trains_turn_it_on() -> None:
    assert early_stop.trains_always(load_space("kd_temperature"))
    assert not early_stop.trains_always(load_space("hybrid"))  # distill can be off
    assert not early_stop.trains_always(load_space("nystrom_m"))  # recover epochs 0..
    cfg = build_config(["space=hybrid"])
    assert not early_stop.enabled(cfg, load_space("hybrid"))
    on = build_config(["search.early_stop=on"])
    assert early_stop.enabled(on, load_space("hybrid"))


def _tiny_recover(plan: RungPlan | None, epochs: int = 3) -> tuple[torch.nn.Module, list]:
    cfg = build_config(["model.embed_dim=32", "model.depth=1", "model.num_heads=2"])
    torch.manual_seed(0)
    model = create_model(cfg.model, 10)
    gen = torch.Generator().manual_seed(0)
    train = (torch.randint(0, 255, (64, 3, 32, 32), dtype=torch.uint8, generator=gen),
             torch.randint(0, 10, (64,), generator=gen))
    seen: list = []

    def evaluate(m: torch.nn.Module) -> float:  # as train.accuracy: switches to eval
        seen.append(m.training)
        m.eval()
        return 0.5

    ctx = compress.TrialContext(train=train, batch_size=32)
    if plan is not None:
        ctx.on_epoch = hook(plan, evaluate, lambda: (1.0, 0.8))
    out = compress.technique("recover").apply(model, RecoverConfig(epochs=epochs), ctx)
    return out, seen


def test_a_trial_told_to_stop_stops_at_its_rung_and_one_told_to_go_on_trains_the_same() -> None:
    asked: list = []

    def stop_at_second(rung: int, point: tuple) -> bool:
        asked.append((rung, point))
        return rung == 0

    with pytest.raises(StoppedAtRung) as info:
        _tiny_recover(RungPlan((1, 2), stop_at_second))
    assert (info.value.rung, info.value.epoch) == (1, 2)
    assert asked == [(0, (0.5, 1.0, 0.8)), (1, (0.5, 1.0, 0.8))]

    plain, _ = _tiny_recover(None)
    judged, seen = _tiny_recover(RungPlan((1, 2, 3), lambda _r, _p: True))
    assert seen == [True, True]  # epochs 1 and 2, mid-training; none after the last epoch
    assert not judged.training
    for (name, a), b in zip(plain.state_dict().items(), judged.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
