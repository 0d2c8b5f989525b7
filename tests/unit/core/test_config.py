from __future__ import annotations

import pytest

from sweeper.core.config import Config, apply_overrides, build_config, config_from_dict, valid_keys
from sweeper.core.errors import UserError


def test_defaults_and_dotted_overrides() -> None:
    cfg = build_config(["search.trials=7", "resources.gpus=0.5", "dashboard=true",
                        "measure.batch_sizes=1,16", "ray.address=auto", "tracking_uri=none"])
    assert cfg.search.trials == 7
    assert cfg.resources.gpus == 0.5
    assert cfg.dashboard is True
    assert cfg.measure.batch_sizes == (1, 16)
    assert cfg.ray.address == "auto"
    assert cfg.tracking_uri is None
    assert Config().search.sampler == "nsga2"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("search.trialz=3", "unknown key 'search.trialz'"),
        ("nope=1", "unknown key 'nope'"),
        ("search.trials=abc", "is not an integer"),
        ("dashboard=maybe", "is not a boolean"),
        ("search.sampler=cmaes", "choose one of: nsga2, tpe, random, gp"),
        ("search.trials=0", "out of range"),
        ("resources.cpus=-1", "out of range"),
        ("data.name=imagenet", "choose one of"),
        ("model.num_heads=3", "divisible"),
        ("search", "must look like key=value"),
        ("search=3", "is a section"),
    ],
)
def test_bad_overrides_name_the_problem(override: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        build_config([override])


def test_unknown_key_lists_valid_keys() -> None:
    with pytest.raises(UserError) as err:
        build_config(["trials=3"])
    assert "search.trials" in str(err.value)
    assert "search.trials" in valid_keys()


def test_config_round_trips_through_dict() -> None:
    cfg = apply_overrides(Config(), ["search.trials=3", "measure.batch_sizes=1,4"])
    assert config_from_dict(cfg.to_dict()) == cfg


def test_tracking_uri_respects_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = build_config([f"output_dir={tmp_path}"])
    assert cfg.resolved_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert cfg.resolved_tracking_uri() == "http://127.0.0.1:5000"
    explicit = build_config(["tracking_uri=sqlite:///x.db"])
    assert explicit.resolved_tracking_uri() == "sqlite:///x.db"
