"""What a Ray cluster can give: this machine's CPUs (affinity, container quota,
`OMP_NUM_THREADS`), whether one trial fits on some node, and attaching to an existing
cluster before anything is written."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from sweeper.core.config import Config
from sweeper.core.errors import UserError

SERVICE_TIMEOUT_S = 3.0


def split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def tcp_reachable(what: str, host: str, port: int) -> None:
    try:
        with socket.create_connection((host, port), timeout=SERVICE_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise UserError(f"{what} is unreachable at {host}:{port} ({reason})") from None


def local_cpus() -> int:
    """CPUs a local Ray instance counts: the machine's, capped by a container's quota."""
    count = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return count


def driver_threads() -> int:
    """Threads for the driver's own torch work (training and evaluating the baseline):
    OMP_NUM_THREADS when it is set, else the CPUs this process may run on (its affinity,
    capped by a container's quota). More threads than free cores is far worse than fewer:
    torch's OpenMP workers spin waiting for each other, and two trainings of 2 threads each on
    2 cores took 5-7x as long as two of 1 thread (the tiny test ViT: 40-58 s against 8 s)."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        allowed = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        allowed = os.cpu_count() or 1
    return max(1, min(allowed, local_cpus()))


def check_local_resources(cfg: Config) -> None:
    """A local cluster is this machine; an attached one is checked by orchestrate.init_ray."""
    if cfg.ray.address:
        return
    import torch

    check_fits(cfg, [{"CPU": local_cpus(), "GPU": torch.cuda.device_count()}], "this machine")


def check_fits(cfg: Config, nodes: list[dict[str, float]], where: str) -> None:
    """One trial needs resources.cpus and resources.gpus on a single node; Tune would wait
    forever for a node that has them."""
    need = {"CPU": cfg.resources.cpus, "GPU": cfg.resources.gpus}
    if any(all(node.get(k, 0) >= v for k, v in need.items()) for node in nodes):
        return
    cpus = max((n.get("CPU", 0) for n in nodes), default=0)
    gpus = max((n.get("GPU", 0) for n in nodes), default=0)
    raise UserError(f"one trial asks for resources.cpus={cfg.resources.cpus:g} and "
                    f"resources.gpus={cfg.resources.gpus:g}, but the largest node of {where} "
                    f"has {cpus:g} CPUs and {gpus:g} GPUs")


