"""One trial, start to finish: copy the baseline, compress, recover, measure.

A pure function of its inputs: no ray and no mlflow here, so it runs (and is tested) alone.
The test split never enters a trial; only the final front is evaluated on it.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeper.core.startup import heavy_imports

# A trial's worker process imports torch and timm here first (unpickling TrialInputs loads
# this module): without the cyclic collector, as the driver does (sweeper.startup).
with heavy_imports():
    import torch
    from torch import nn

    from sweeper import compress
    from sweeper.core import node_lock
    from sweeper.core.config import Config
    from sweeper.data.preprocess import Preprocessing
    from sweeper.data.split import Split
    from sweeper.early_stop import watch as rung_watch
    from sweeper.early_stop.watch import RungPlan
    from sweeper.measure.hardware import cpu_model, fingerprint, isa_summary
    from sweeper.measure.latency import LatencyPair, Timing, compare_latency
    from sweeper.measure.size import state_bytes
    from sweeper.models.train import accuracy
    from sweeper.models.vit import count_parameters, create_model

MB = 1e6


@dataclass(frozen=True)
class TrialInputs:
    """Everything a trial needs; shipped once to the workers through Ray's object store."""

    config: Config
    baseline_state: dict[str, torch.Tensor]
    baseline_val_acc: float
    baseline_size_bytes: int
    num_classes: int
    train: Split  # in memory (digits, CIFAR) or file names streamed from disk (image folders)
    val: Split
    preprocessing: Preprocessing


@dataclass
class TrialResult:
    metrics: dict[str, float]  # what Optuna and MLflow see
    tags: dict[str, str]  # device, node, technique notes
    artifact: bytes = field(repr=False)  # torch.save(compressed.state_dict())

    @property
    def val_acc(self) -> float:
        return self.metrics["val_acc"]


def pick_device(cfg: Config) -> torch.device:
    if cfg.resources.trial_device() == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("a CUDA device was requested but none is visible to this trial")
        return torch.device("cuda")
    return torch.device("cpu")


def build_baseline(inputs: TrialInputs) -> nn.Module:
    model = create_model(inputs.config.model, inputs.num_classes)
    model.load_state_dict(inputs.baseline_state)
    return model.eval()


def run_trial(
    inputs: TrialInputs, pipeline: list[Any], artifacts_dir: Path | None = None,
    rungs: RungPlan | None = None,
) -> TrialResult:
    """Compress a copy of the baseline with `pipeline` and measure it; techniques may write
    files (plots, histograms) to `artifacts_dir`, which end up on the trial's MLflow run.
    With `rungs`, a training stage may stop the trial early (sweeper.rung_watch)."""
    cfg = inputs.config
    compress.validate_pipeline(pipeline)
    start = time.perf_counter()
    threads = max(1, round(cfg.resources.cpus))
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.search.seed)
    device = pick_device(cfg)
    lock = node_lock.activate() if cfg.measure.quiet else None
    waits_before = dataclasses.replace(lock.waits) if lock else None

    baseline = build_baseline(inputs).to(device)
    ctx = _context(inputs, device, baseline, artifacts_dir)
    if rungs is not None:
        ctx.on_epoch = _rung_hook(rungs, inputs, baseline, pipeline, device, ctx)
    try:
        model = compress.apply_pipeline(copy.deepcopy(baseline), pipeline, ctx)
    except rung_watch.StoppedAtRung as stop:
        metrics = rung_watch.stopped_metrics(stop, inputs.baseline_val_acc,
                                             inputs.baseline_size_bytes)
        metrics["trial_seconds"] = time.perf_counter() - start
        tags = {**_tags(device, threads, ctx, onnx=False), "stopped_at_rung": str(stop.rung)}
        return TrialResult(metrics, tags, b"")
    if ctx.runs_on and ctx.runs_on != device.type:  # launch rejects these (check_device)
        raise RuntimeError(f"{', '.join(map(compress.name_of, pipeline))} runs on "
                           f"{ctx.runs_on} only, but this trial's device is {device}")
    model.to(device).eval()  # model and baseline are timed on one device, never apart

    val_acc = accuracy(model, inputs.val, inputs.preprocessing, device,
                       cfg.measure.eval_batch_size)
    artifact = state_bytes(model)
    latency, runtime_metrics = _latency(model, baseline, inputs, device, threads, ctx)
    metrics = {
        "val_acc": val_acc,
        "val_acc_drop": inputs.baseline_val_acc - val_acc,
        **_size_metrics(len(artifact), inputs.baseline_size_bytes, runtime_metrics),
        **latency_metrics(latency, cfg.measure.batch_sizes),
        "params": float(count_parameters(model)),
        # 1: low precision only simulated (fake-quant / unpack to float), latency is float's
        "simulated": float(ctx.simulated),
        **runtime_metrics,
        **_lock_waits(lock, waits_before),
        "trial_seconds": time.perf_counter() - start,
    }
    return TrialResult(metrics, _tags(device, threads, ctx, "onnx_size_bytes" in metrics),
                       artifact)


def _rung_hook(rungs: RungPlan, inputs: TrialInputs, baseline: nn.Module, pipeline: list[Any],
               device: torch.device, ctx: compress.TrialContext) -> Any:
    """The epoch hook that reports validation accuracy at each rung (with the size and
    latency of the trial's final form) and stops the trial when the driver says so."""
    m = inputs.config.measure
    return rung_watch.hook(
        rungs,
        lambda model: accuracy(model, inputs.val, inputs.preprocessing, device,
                               m.eval_batch_size),
        lambda: rung_watch.final_form(baseline, pipeline, device, inputs.preprocessing,
                                      rung_watch.timing_of(Timing.of(m)), m.batch_sizes[0]),
        ctx.notes)


def _context(inputs: TrialInputs, device: torch.device, baseline: nn.Module,
             artifacts_dir: Path | None) -> compress.TrialContext:
    cfg = inputs.config
    return compress.TrialContext(
        device=device,
        train=inputs.train,
        val=inputs.val,
        preprocessing=inputs.preprocessing,
        batch_size=cfg.train.batch_size,
        weight_decay=cfg.train.weight_decay,
        seed=cfg.search.seed,
        teacher=baseline,
        artifacts_dir=artifacts_dir,
    )


def _latency(model: nn.Module, baseline: nn.Module, inputs: TrialInputs, device: torch.device,
             threads: int, ctx: compress.TrialContext) -> tuple[LatencyPair, dict[str, float]]:
    """Paired model/baseline timing in the configured runtime, plus what that runtime
    measured besides (ONNX Runtime: the graph's bytes and accuracy)."""
    cfg = inputs.config
    if cfg.measure.runtime == "onnxruntime":
        from sweeper.measure import runtime  # onnx/onnxruntime load only when asked for

        return runtime.measure(model, baseline, cfg, device, threads, ctx)
    return compare_latency(model, baseline, inputs.preprocessing.img_size,
                           cfg.measure.batch_sizes, device, Timing.of(cfg.measure)), {}


def _size_metrics(torch_bytes: int, baseline_torch_bytes: int,
                  runtime_metrics: dict[str, float]) -> dict[str, float]:
    """Size is what ships for the chosen runtime: the ONNX file under ONNX Runtime (the bytes
    `export` writes), else the saved state_dict; the ratio is to the baseline's same format."""
    shipped = runtime_metrics.get("onnx_size_bytes", float(torch_bytes))
    base = runtime_metrics.get("baseline_onnx_size_bytes", float(baseline_torch_bytes))
    return {"size_mb": shipped / MB, "size_bytes": shipped, "size_ratio": shipped / base,
            "torch_size_bytes": float(torch_bytes)}


def latency_metrics(latency: LatencyPair, batch_sizes: tuple[int, ...]) -> dict[str, float]:
    b1, blarge = batch_sizes[0], batch_sizes[-1]
    return {
        "latency_ms": latency.model_ms[b1],
        "baseline_latency_ms": latency.baseline_ms[b1],
        "speedup": latency.speedup(b1),
        # model/baseline time measured in this process: the latency objective, robust to
        # machine load in a way absolute milliseconds are not
        "latency_ratio": latency.ratio(b1),
        **latency_interval_metrics(latency),
        f"latency_ms_b{blarge}": latency.model_ms[blarge],
        f"baseline_latency_ms_b{blarge}": latency.baseline_ms[blarge],
        f"speedup_b{blarge}": latency.speedup(blarge),
    }


def _tags(device: torch.device, threads: int, ctx: compress.TrialContext,
          onnx: bool) -> dict[str, str]:
    tags = {
        "device": str(device),
        "train_device": str(device),
        "node": socket.gethostname(),
        "node_ip": _node_ip(),
        "pid": str(os.getpid()),
        "threads": str(threads),
        **hardware_tags(device),
        "simulated": str(ctx.simulated).lower(),
        # what size_mb counts; the bitmask-sparse state_dict loads only through sweeper
        "shipped_format": "onnx" if onnx else (
            "sweeper sparse state_dict (loads with sweeper only)"
            if ctx.notes.get("stored_sparse") else "torch state_dict"),
        **{k: str(v) for k, v in ctx.notes.items()},
    }
    tags["fingerprint"] = fingerprint(tags)
    return tags


def _lock_waits(lock: node_lock.NodeLock | None,
                before: node_lock.Waits | None) -> dict[str, float]:
    """Seconds this trial's batches waited for other trials' measurements, and its own
    measurements for other trials' batches (none without the quiet lock)."""
    if lock is None or before is None:
        return {}
    return {"quiet_wait_s": lock.waits.computing_s - before.computing_s,
            "measure_wait_s": lock.waits.measuring_s - before.measuring_s}


def latency_interval_metrics(latency: LatencyPair) -> dict[str, float]:
    """The latency ratio's bootstrap 95% interval, pair and round counts and whether it
    converged, per batch size (batch 1 unsuffixed, as `latency_ratio`)."""
    out = {}
    for i, (batch, r) in enumerate(latency.by_batch.items()):
        suffix = "" if i == 0 else f"_b{batch}"
        out |= {f"latency_ratio_lo{suffix}": r.lo, f"latency_ratio_hi{suffix}": r.hi,
                f"latency_pairs{suffix}": float(r.pairs),
                f"latency_rounds{suffix}": float(r.rounds),
                f"latency_converged{suffix}": float(r.converged)}
        if i:
            out[f"latency_ratio{suffix}"] = r.ratio
    return out


def hardware_tags(device: torch.device) -> dict[str, str]:
    """What the timings depend on: CPU model and the ISA flags kernels dispatch on, the GPU,
    and the library versions."""
    import timm

    tags = {"cpu": cpu_model(), "cpu_isa": isa_summary(), "torch": torch.__version__,
            "timm": timm.__version__}
    if device.type == "cuda":
        tags["gpu"] = torch.cuda.get_device_name(device)
    return tags


def _node_ip() -> str:
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "unknown"


def evaluate_artifact(
    inputs: TrialInputs, pipeline: list[Any], state: dict[str, torch.Tensor], data: Split
) -> float:
    """Accuracy of a saved compressed model on `data` (used for the front's test accuracy)."""
    model = compress.rebuild(build_baseline(inputs), pipeline, state)
    cfg = inputs.config
    return accuracy(model, data, inputs.preprocessing, torch.device("cpu"),
                    cfg.measure.eval_batch_size)
