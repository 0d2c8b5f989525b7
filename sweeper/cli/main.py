"""python -m sweeper launch space=NAME [key=value ...]

Bad input is one line on stderr and exit status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
import traceback
from typing import TYPE_CHECKING, NoReturn

from sweeper.cli.config_help import launch_epilog
from sweeper.cli.select import cmd_select
from sweeper.cluster.stop_signal import sigterm_as_ctrl_c
from sweeper.core.config import Config, build_config, config_from_dict, given_once, redact
from sweeper.core.errors import UserError
from sweeper.core.quiet import quiet_third_party
from sweeper.core.startup import heavy_imports

if TYPE_CHECKING:
    from sweeper.sweep.state import SweepOutcome

# a full or read-only disk is the machine's state, not a bug: one error line, as bad input
_THE_MACHINES = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
BUG_LINE = "this is a bug in sweeper: please report it with the traceback above"


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are bad input like any other: one `error:` line, exit status 2."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see `{self.prog} --help`)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m sweeper", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    launch = sub.add_parser("launch", help="run a sweep over a search space",
                            epilog=launch_epilog(),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
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
    select = sub.add_parser("select", help="pick a front member within limits (and export it)")
    select.add_argument("run", help="MLflow parent run id, sweep name or sweep folder")
    select.add_argument("overrides", nargs="*", metavar="key=value",
                        help="max_accuracy_drop=X max_size_ratio=Y max_latency_ratio=Z "
                             "prefer=accuracy|size|latency export=PATH format=onnx|torch "
                             "output_dir=DIR")
    stack = sub.add_parser("stack", help="start/stop PostgreSQL, MLflow and a Ray head here")
    stack.add_argument("action", choices=["up", "down"])
    stack.add_argument("overrides", nargs="*", metavar="key=value",
                       help="dir=DIR, pg_port=N, mlflow_port=N, ray_port=N, dashboard_port=N")
    return parser


def _say(msg: str) -> None:
    print(msg, flush=True)


def cmd_launch(overrides: list[str]) -> int:
    with heavy_imports():  # torch, timm: only the commands that run a sweep load them
        from sweeper.sweep.driver import launch, prepare

    cfg = build_config(overrides)
    prep = prepare(cfg)
    return _print_outcome(cfg, launch(prep, (lambda _m: None) if cfg.quiet else _say))


def cmd_resume(run: str, overrides: list[str]) -> int:
    with heavy_imports():  # as cmd_launch
        from sweeper.sweep.driver import resume

    cfg = build_config(overrides)
    if any(not o.startswith("output_dir=") for o in overrides):
        raise UserError("resume takes only output_dir=DIR; the sweep keeps its own settings")
    outcome = resume(run, cfg.output_dir, _say)
    if outcome is None:  # a finished sweep: only the MLflow writes it missed were synced
        return 0
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
    uri = redact(cfg.resolved_tracking_uri())
    page = _runs_page(outcome)
    if uri.startswith(("http://", "https://")):
        print(f"MLflow:   open {uri.rstrip('/')}{page}, experiment '{cfg.experiment}', "
              f"parent run {outcome.parent_run_id}")
    else:
        print(f"MLflow:   mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000")
        print(f"          then open http://127.0.0.1:5000{page}, experiment "
              f"'{cfg.experiment}', parent run {outcome.parent_run_id}")
    return 0


def _runs_page(outcome: SweepOutcome) -> str:
    """The sweep's parent run in the MLflow UI's model-training view: MLflow 3.17's UI picks
    its view from this URL parameter (else from the browser's last choice, GenAI at first)."""
    try:
        experiment = json.loads((outcome.sweep_dir / "sweep.json").read_text())["experiment_id"]
    except (OSError, ValueError, KeyError):
        return ""
    return (f"/#/experiments/{experiment}/runs/{outcome.parent_run_id}"
            "?workflowType=machine_learning")


def cmd_spaces() -> int:
    from sweeper.spaces.space import available, load_space  # torch (the techniques' checks)

    for name in available():
        print(f"{name:16s} {load_space(name).description.strip()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit status 2 and one `error:` line for bad input, 1 and a traceback for our bugs."""
    quiet_third_party()
    try:
        args = _parser().parse_args(argv)
        given_once(getattr(args, "overrides", []))
        if args.command in ("launch", "resume"):
            sigterm_as_ctrl_c()
        if args.command == "launch":
            return cmd_launch(args.overrides)
        if args.command == "resume":
            return cmd_resume(args.run, args.overrides)
        if args.command == "export":
            from sweeper.cli.export import cmd_export  # torch, timm, onnx: this command only

            return cmd_export(args.run, args.trial, args.overrides)
        if args.command == "select":
            return cmd_select(args.run, args.overrides)
        if args.command == "stack":
            from sweeper.cluster.stack import cmd_stack  # the servers' processes: stack only

            return cmd_stack(args.action, args.overrides)
        return cmd_spaces()
    except UserError as exc:
        print(f"error: {one_line(str(exc))}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt as exc:
        print(_interrupted(exc), file=sys.stderr, flush=True)
        return 130  # 128 + SIGINT, as a shell reports it
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno in _THE_MACHINES:
            print(f"error: {one_line(str(exc))}", file=sys.stderr, flush=True)
            return 2
        traceback.print_exc()
        print(BUG_LINE, file=sys.stderr, flush=True)
        return 1


def one_line(message: str) -> str:
    """The message on one line, with any URL's password masked."""
    return redact(" ".join(message.split()))


def _interrupted(exc: KeyboardInterrupt) -> str:
    name = getattr(exc, "name", None)  # sweep.SweepInterrupted: the sweep's state is saved
    if name:
        from sweeper.sweep.driver import interrupted_line  # loaded: a sweep was running

        return interrupted_line(name, exc.command)  # type: ignore[attr-defined]
    return "interrupted"


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
