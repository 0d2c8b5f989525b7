"""The sweep's Optuna sampler, and `NoRepeatSampler`, which keeps trials off configurations
another trial already has."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna

from sweeper.core.config import Config


def make_sampler(
    cfg: Config, define: Callable[[Any], Any] | None = None
) -> optuna.samplers.BaseSampler:
    """The sweep's Optuna sampler; given the space's define-by-run function, wrapped in
    `NoRepeatSampler` so no trial repeats a configuration another trial already has."""
    s = cfg.search
    # the accuracy budget reaches the samplers as constraints set on each trial
    # (ConstrainedOptunaSearch); Optuna 5 reads them from the study, no constraints_func
    sampler: optuna.samplers.BaseSampler
    if s.sampler == "nsga2":
        population = s.population or max(4, min(50, s.trials // 4))
        sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=s.seed)
    elif s.sampler == "tpe":
        sampler = optuna.samplers.TPESampler(seed=s.seed, multivariate=True)
    elif s.sampler == "gp":
        sampler = optuna.samplers.GPSampler(seed=s.seed)
    else:
        sampler = optuna.samplers.RandomSampler(seed=s.seed)
    return sampler if define is None else NoRepeatSampler(sampler, define, seed=s.seed)


# Optuna's GPSampler refits its Gaussian process on every finished trial at each ask, so an
# ask costs more the larger the study: 0.3 s at 100 finished trials, 1.2 s at 300, 14 s at
# 1,000 (benchmarks/samplers.py, docs/running-sweeps.md#samplers). NSGA-II and random stay
# near 10 ms at 2,000; TPE grows linearly (0.1 s at 2,000).
GP_TRIALS = 300


def scale_note(cfg: Config) -> str | None:
    """A line for the launch when the sampler is not meant for the sweep's size."""
    s = cfg.search
    if s.sampler == "gp" and s.trials > GP_TRIALS:
        return (f"note: search.sampler=gp refits a Gaussian process on every finished trial at "
                f"each ask, on the driver: past about {GP_TRIALS} trials an ask takes seconds "
                f"(14 s at 1,000 on a 2-core Xeon; docs/running-sweeps.md#samplers); "
                "search.sampler=nsga2 stays near 10 ms per ask at 2,000 trials")
    return None


class NoRepeatSampler(optuna.samplers.BaseSampler):
    """Wraps a sampler so that a trial does not repeat the configuration of a finished or
    running trial. Discrete spaces make samplers propose those often (an NSGA-II child equal
    to a parent, a categorical drawn again): on benchmarks/search_efficiency.py NSGA-II spent
    13 of 32 trials on repeats. When a trial takes its first parameter, the define-by-run
    space is rehearsed, up to `tries` times, until a new configuration comes out: through the
    wrapped sampler for the first `own_tries`, then through a random sampler (TPE and GP
    propose the maximum of their acquisition, the same point again; a random new point is
    the exploration they skip). An exhausted space keeps the last rehearsal. The trial's
    suggestions then return that plan, so the study holds one trial per sweep trial, as
    without the wrapper. GP only draws its always-present parameters again at the cost of
    another model fit for the same answer, so its relative proposal is made once."""

    def __init__(self, sampler: optuna.samplers.BaseSampler, define: Callable[[Any], Any],
                 seed: int | None = None, tries: int = 10, own_tries: int = 3) -> None:
        self.sampler, self.define, self.tries, self.own_tries = sampler, define, tries, own_tries
        # seed + 1: with the sweep's seed it would be the twin of a wrapped RandomSampler
        # and draw the very repeats it is there to replace
        self.random = optuna.samplers.RandomSampler(seed=None if seed is None else seed + 1)
        self.redraw_relative = not isinstance(sampler, optuna.samplers.GPSampler)
        self._plans: dict[int, dict[str, Any]] = {}
        # configurations of trials in a final state (they never change): each trial's key is
        # made once, so an ask costs a pass over the study, not a sort of every trial's params
        self._final: set[tuple] = set()
        self._seen_final: set[int] = set()

    def taken(self, study: optuna.Study, trial: Any) -> set[tuple]:
        """The configurations of the study's finished and running trials but `trial`."""
        running = set()
        for t in study.get_trials(deepcopy=False, states=_TAKEN):
            if t.number == trial.number:
                continue
            if t.state == optuna.trial.TrialState.RUNNING:
                running.add(_params_key(t.params))
            elif t.number not in self._seen_final:
                self._seen_final.add(t.number)
                self._final.add(_params_key(t.params))
        return self._final | running

    def infer_relative_search_space(self, study: optuna.Study, trial: Any) -> dict[str, Any]:
        return self.sampler.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: Any,
                        search_space: dict[str, Any]) -> dict[str, Any]:
        taken = self.taken(study, trial)
        relative = self.sampler.sample_relative(study, trial, search_space)
        verbosity = optuna.logging.get_verbosity()
        try:
            for attempt in range(self.tries):
                own = attempt < self.own_tries
                if attempt:  # the wrapped sampler's notices were shown once already
                    optuna.logging.set_verbosity(optuna.logging.ERROR)
                    if own and self.redraw_relative:
                        relative = self.sampler.sample_relative(study, trial, search_space)
                rehearsal = _Rehearsal(self.sampler if own else self.random, study, trial,
                                       relative if own else {})
                self.define(rehearsal)
                if _params_key(rehearsal.params) not in taken:
                    break
        finally:
            optuna.logging.set_verbosity(verbosity)
        self._plans[trial.number] = rehearsal.params
        return {}  # every parameter is served from the plan by sample_independent

    def sample_independent(self, study: optuna.Study, trial: Any, param_name: str,
                           param_distribution: Any) -> Any:
        plan = self._plans.get(trial.number, {})
        if param_name in plan:
            value = plan[param_name]
            if param_distribution._contains(param_distribution.to_internal_repr(value)):
                return value
        return self.sampler.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: Any) -> None:
        self.sampler.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: Any, state: Any, values: Any) -> None:
        self._plans.pop(trial.number, None)
        self.sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()


class _Rehearsal:
    """Stands in for an Optuna trial while a define-by-run function is played through a
    sampler: the relative proposal where it has the parameter, else the sampler's
    independent draw, as `optuna.Trial` would pick."""

    def __init__(self, sampler: optuna.samplers.BaseSampler, study: optuna.Study, trial: Any,
                 relative: dict[str, Any]) -> None:
        self.sampler, self.study, self.trial, self.relative = sampler, study, trial, relative
        self.params: dict[str, Any] = {}

    def _suggest(self, name: str, dist: Any) -> Any:
        if name in self.params:
            return self.params[name]
        if dist.single():
            value = dist.choices[0] if hasattr(dist, "choices") else dist.low
        elif name in self.relative and dist._contains(dist.to_internal_repr(self.relative[name])):
            value = self.relative[name]
        else:
            value = self.sampler.sample_independent(self.study, self.trial, name, dist)
        self.params[name] = value
        return value

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self._suggest(name, optuna.distributions.CategoricalDistribution(choices))

    def suggest_int(self, name: str, low: int, high: int, step: int = 1,
                    log: bool = False) -> int:
        return self._suggest(name, optuna.distributions.IntDistribution(low, high, log, step))

    def suggest_float(self, name: str, low: float, high: float, step: float | None = None,
                      log: bool = False) -> float:
        return self._suggest(name, optuna.distributions.FloatDistribution(low, high, log, step))


_TAKEN = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING,
          optuna.trial.TrialState.PRUNED)


def _params_key(params: dict[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))
