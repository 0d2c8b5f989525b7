"""python -m sweeper launch space=NAME [key=value ...]

Bad input is one line on stderr and exit status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from sweeper.config import Config, build_config, valid_keys
from sweeper.errors import UserError
from sweeper.quiet import quiet_third_party

if TYPE_CHECKING:
    from sweeper.sweep import SweepOutcome

USAGE_EPILOG = "overrides: dotted key=value, e.g. search.trials=8 resources.cpus=1\nkeys: "


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sweeper", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    launch = sub.add_parser("launch", help="run a sweep over a search space",
                            epilog=USAGE_EPILOG + " ".join(valid_keys()))
    launch.add_argument("overrides", nargs="*", metavar="key=value")
    resume = sub.add_parser("resume", help="continue a sweep whose driver died")
    resume.add_argument("run", help="MLflow parent run id, sweep name or sweep folder")
    resume.add_argument("overrides", nargs="*", metavar="output_dir=DIR",
                        help="only output_dir: where to look for the sweep")
    sub.add_parser("spaces", help="list the search spaces")
    export = sub.add_parser("export", help="write one trial's compressed model to a file")
    export.add_argument("run", help="MLflow parent run id, sweep name or sweep folder")
    export.add_argument("trial", help="Ray trial id (the MLflow child run's name)")
    export.add_argument("overrides", nargs="*", metavar="key=value",
                        help="format=onnx|torch (default onnx), output_dir=DIR, out=PATH")
    return parser


def _say(msg: str) -> None:
    print(msg, flush=True)


def cmd_launch(overrides: list[str]) -> int:
    from sweeper.sweep import launch, prepare

    cfg = build_config(overrides)
    prep = prepare(cfg)
    return _print_outcome(cfg, launch(prep, (lambda _m: None) if cfg.quiet else _say))


def cmd_resume(run: str, overrides: list[str]) -> int:
    from sweeper.sweep import resume

    cfg = build_config(overrides)
    if any(not o.startswith("output_dir=") for o in overrides):
        raise UserError("resume takes only output_dir=DIR; the sweep keeps its own settings")
    outcome = resume(run, cfg.output_dir, _say)
    from sweeper.config import config_from_dict

    meta = json.loads((outcome.sweep_dir / "sweep.json").read_text())
    return _print_outcome(config_from_dict(meta["config"]), outcome)


def _print_outcome(cfg: Config, outcome: SweepOutcome) -> int:
    if not outcome.rows:
        print(f"error: no trial finished; see the FAILED child runs of MLflow run "
              f"{outcome.parent_run_id}", file=sys.stderr)
        return 1
    print()
    print(f"Pareto front ({len(outcome.front)} of {len(outcome.rows)} trials, "
          f"hypervolume {outcome.hypervolume:.4f}, wall {outcome.wall_seconds:.0f}s):")
    print(outcome.table)
    print()
    print(f"results:  {outcome.sweep_dir}  (front.csv, front.json, front.png)")
    uri = cfg.resolved_tracking_uri()
    if uri.startswith(("http://", "https://")):
        print(f"MLflow:   open {uri}, experiment '{cfg.experiment}', "
              f"parent run {outcome.parent_run_id}")
    else:
        print(f"MLflow:   mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000")
        print(f"          then open http://127.0.0.1:5000, experiment '{cfg.experiment}', "
              f"parent run {outcome.parent_run_id}")
    return 0


def cmd_spaces() -> int:
    from sweeper.spaces import available, load_space

    for name in available():
        print(f"{name:16s} {load_space(name).description.strip()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    quiet_third_party()
    args = _parser().parse_args(argv)
    try:
        if args.command == "launch":
            return cmd_launch(args.overrides)
        if args.command == "resume":
            return cmd_resume(args.run, args.overrides)
        if args.command == "export":
            from sweeper.export import cmd_export

            return cmd_export(args.run, args.trial, args.overrides)
        return cmd_spaces()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
