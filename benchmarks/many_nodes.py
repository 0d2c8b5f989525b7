"""The driver on a simulated many-node cluster: several Ray nodes on this machine (loopback,
each a raylet of its own started by `ray start`, declaring its own CPUs), sweeps
of trials that take about 0 s and about 1 s, at several concurrencies and trial counts.

Each cell is one sweep through sweeper's own path (OptunaSearch with the journal-file study,
NoRepeatSampler over NSGA-II, MLflow child runs through the writer thread, trials.jsonl, the
hypervolume curve), with the trial body replaced by a sleep. It reports trials per second
through the driver (whole sweep, and late in it: the last 100 completions, or the last
quarter of a shorter sweep), the driver's CPU time as a share of the wall time (near 100%:
the driver sets the pace), its memory, Optuna's time per ask and the MLflow writer's peak
backlog.

A cell whose trial bodies alone need more than --budget seconds (N x seconds / C) is skipped
and listed as such: it would measure the sleeps, not the driver.

    python benchmarks/many_nodes.py                       # 4 nodes x 8 CPUs, the full table
    python benchmarks/many_nodes.py --concurrency 32 --trials 100 1000
    python benchmarks/many_nodes.py --quick               # smoke test: 2 nodes x 2 CPUs
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

# Ray reads the mode when it is imported: the driver must send the nodes' token
os.environ["RAY_AUTH_MODE"] = "token"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from orchestration import TRIVIAL_METRICS, sweeper_run  # noqa: E402

from sweeper.cluster import stack  # noqa: E402
from sweeper.core import journal  # noqa: E402
from sweeper.core.files import write_json  # noqa: E402
from sweeper.core.quiet import quiet_third_party  # noqa: E402
from sweeper.measure.hardware import cpu_model, isa_summary  # noqa: E402

RAY = Path(sys.executable).parent / "ray"


def make_body(seconds: float) -> Any:
    """A trial that sleeps `seconds` and reports fixed metrics, tagged with its node."""

    def body(config: dict[str, Any], **_: Any) -> None:
        import ray
        from ray import tune

        time.sleep(seconds)
        node = ray.get_runtime_context().get_node_id()[:8]
        tune.report(dict(TRIVIAL_METRICS, trial_seconds=seconds, tags={"node": node}))

    return body


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray(*args: str) -> None:
    proc = subprocess.run([str(RAY), *args], env=stack.ray_env(), capture_output=True,
                          text=True, timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"error: ray {args[0]} failed: {proc.stderr[-1500:]}")


def start_cluster(nodes: int, cpus: int) -> int:
    """`nodes` Ray nodes on 127.0.0.1 (`ray start`, token authentication as on a real
    cluster), `cpus` CPUs each; the driver connects to the head. Returns the GCS port."""
    import ray

    port = _free_port()
    _ray("get-auth-token", "--generate")
    _ray("start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
         f"--num-cpus={cpus}", "--include-dashboard=false", "--disable-usage-stats")
    try:
        for _ in range(nodes - 1):
            _ray("start", f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1",
                 f"--num-cpus={cpus}", f"--node-manager-port={_free_port()}",
                 "--disable-usage-stats")
        ray.init(address=f"127.0.0.1:{port}", log_to_driver=False, logging_level="ERROR")
        alive = [n for n in ray.nodes() if n.get("Alive")]
        if len(alive) != nodes:
            raise SystemExit(f"error: {len(alive)} of {nodes} Ray nodes came up")
    except BaseException:
        stop_cluster(port)
        raise
    return port


def stop_cluster(port: int) -> None:
    """Every process of this cluster, by its GCS port (never `ray stop`, which would end
    other Ray instances on the machine too)."""
    stack.kill_pids(stack.ray_pids(port))


def nodes_used(sweep_rows: Path) -> int:
    tags = (r.get("tags") or {} for r in journal.read(sweep_rows) if r.get("event") == "complete")
    return len(Counter(t.get("node") for t in tags if t.get("node")))


def cell(n: int, c: int, seconds: float, out: Path) -> dict[str, Any]:
    m = sweeper_run(n, c, out, make_body(seconds))
    wall = m["tune_seconds"]
    return {"trial_seconds": seconds, "concurrency": c, "trials": n, **m,
            "trials_per_s": m["trials_ok"] / wall,
            "late_trials_per_s": 1 / m["gap_late_s"] if m.get("gap_late_s") else None,
            "ideal_trials_per_s": c / seconds if seconds else None,
            "driver_cpu_share": m["driver_cpu_seconds"] / wall,
            "nodes_used": nodes_used(Path(m["sweep_dir"]) / journal.TRIALS)}


def line(r: dict[str, Any]) -> str:
    late = f"{r['late_trials_per_s']:7.1f}" if r["late_trials_per_s"] else "      -"
    ideal = f"{r['ideal_trials_per_s']:6.1f}" if r["ideal_trials_per_s"] else "     -"
    return (f"| {r['trial_seconds']:g} s | {r['concurrency']:3d} | {r['trials']:5d} | "
            f"{r['tune_seconds']:7.1f} | {r['trials_per_s']:6.1f} | {late} | {ideal} | "
            f"{100 * r['driver_cpu_share']:4.0f}% | {r['driver_rss_mb']:5.0f} | "
            f"{r['ask_ms_median']:6.1f} | {r['writer_peak_backlog']:4d} | {r['nodes_used']} |")


HEADER = ("| trial | C | N | wall s | trials/s | late trials/s | ideal | driver CPU | RSS MB | "
          "ask ms | backlog | nodes |\n|---|---|---|---|---|---|---|---|---|---|---|---|")


def main() -> None:
    import ray

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--cpus-per-node", type=int, default=8)
    parser.add_argument("--trial-seconds", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--trials", type=int, nargs="+", default=[100, 1000, 2000])
    parser.add_argument("--budget", type=float, default=300.0,
                        help="skip cells whose trial bodies alone take longer (seconds)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 nodes x 2 CPUs")
    parser.add_argument("--json", default="benchmarks/results/many_nodes.json")
    args = parser.parse_args()
    if args.quick:
        args.nodes, args.cpus_per_node, args.trials = 2, 2, [8]
        args.concurrency, args.trial_seconds = [4], [0.0, 0.2]
    quiet_third_party()
    print(f"CPU: {cpu_model()} ({isa_summary()}), {os.cpu_count()} cores; simulated cluster "
          f"{args.nodes} nodes x {args.cpus_per_node} CPUs on 127.0.0.1", flush=True)
    port = start_cluster(args.nodes, args.cpus_per_node)
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []

    def save() -> None:  # after every cell: a run cut short keeps what it measured
        write_json(Path(args.json), {
            "date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "isa": isa_summary(),
            "cpus": os.cpu_count(), "nodes": args.nodes, "cpus_per_node": args.cpus_per_node,
            "rows": rows, "skipped": skipped})

    print(HEADER, flush=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for seconds in args.trial_seconds:
                for c in args.concurrency:
                    for n in args.trials:
                        if n * seconds / c > args.budget:
                            skipped.append({"trial_seconds": seconds, "concurrency": c,
                                            "trials": n, "bodies_alone_s": n * seconds / c})
                            continue
                        # one output folder: the baseline trains once, each cell is a sweep
                        rows.append(cell(n, c, seconds, Path(tmp)))
                        print(line(rows[-1]), flush=True)
                        save()
    finally:
        ray.shutdown()
        stop_cluster(port)
    for s in skipped:
        print(f"skipped: {s['trial_seconds']:g} s trials, C={s['concurrency']}, "
              f"N={s['trials']}: the bodies alone take {s['bodies_alone_s']:.0f} s "
              f"(> --budget {args.budget:g} s)")
    save()
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
