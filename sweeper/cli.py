"""python -m sweeper launch space=NAME [key=value ...]

Bad input is one line on stderr and exit status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import sys

from sweeper.config import build_config, valid_keys
from sweeper.errors import UserError
from sweeper.quiet import quiet_third_party

USAGE_EPILOG = "overrides: dotted key=value, e.g. search.trials=8 resources.cpus=1\nkeys: "


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sweeper", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    launch = sub.add_parser("launch", help="run a sweep over a search space",
                            epilog=USAGE_EPILOG + " ".join(valid_keys()))
    launch.add_argument("overrides", nargs="*", metavar="key=value")
    sub.add_parser("spaces", help="list the search spaces")
    return parser


def cmd_launch(overrides: list[str]) -> int:
    from sweeper.sweep import launch, prepare

    cfg = build_config(overrides)
    prep = prepare(cfg)
    log = (lambda _msg: None) if cfg.quiet else (lambda msg: print(msg, flush=True))
    outcome = launch(prep, log)
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
    print(f"MLflow:   mlflow ui --backend-store-uri {cfg.resolved_tracking_uri()} "
          f"--host 127.0.0.1 --port 5000")
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
        return cmd_spaces()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
