"""The onnxruntime deployment runtime: export, sessions, latency and accuracy in ONNX Runtime.

With `measure.runtime=onnxruntime` a trial exports the float baseline and the compressed model
to ONNX (quantized layers lowered to ORT's int8 / low-bit kernels by sweeper.onnx_lowering),
and times both with ONNX Runtime on the trial's device and thread count, in interleaved pairs
per batch size like `sweeper.measure.compare_latency`. Accuracy and size of the ONNX graph are
recorded beside the PyTorch artifact's (`ort_val_acc`, `onnx_size_bytes`); int8 layers use the same
integer codes in both, so the two differ only by float rounding.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from sweeper.compress import TrialContext
from sweeper.compress.onnx_lowering import LoweringReport, export_float, to_onnx
from sweeper.core.config import Config
from sweeper.core.errors import UserError
from sweeper.data.preprocess import Preprocessing
from sweeper.data.split import Pair, Split, as_split
from sweeper.measure.latency import (
    DEFAULT_TIMING,
    LatencyPair,
    Timing,
    paired_inputs,
    paired_ratios,
)


def onnx_bytes(model: nn.Module, img_size: int) -> tuple[bytes, LoweringReport]:
    """Serialized deployable ONNX graph of `model` (see sweeper.onnx_lowering)."""
    proto, report = to_onnx(model, img_size)
    return proto.SerializeToString(), report


def float_onnx_bytes(model: nn.Module, img_size: int) -> bytes:
    return export_float(model, img_size).SerializeToString()


def check_providers(device: str) -> None:
    """UserError at launch when ONNX Runtime cannot run on the trials' device."""
    if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise UserError(
            "measure.runtime=onnxruntime on CUDA trials needs onnxruntime-gpu "
            f"(available providers: {', '.join(ort.get_available_providers())}); "
            "use measure.runtime=torch or CPU trials (resources.gpus=0)")


def providers(device: torch.device) -> list[str]:
    check_providers(device.type)
    if device.type == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session(model: bytes, device: torch.device, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only
    return ort.InferenceSession(model, opts, providers=providers(device))


def predict(sess: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _timer(sess: ort.InferenceSession, x: np.ndarray) -> Callable[[], float]:
    """One synchronous `run` (it returns host memory), in seconds."""
    feed = {sess.get_inputs()[0].name: x}

    def call() -> float:
        start = time.perf_counter()
        sess.run(None, feed)
        return time.perf_counter() - start

    return call


def compare_latency(
    model: ort.InferenceSession,
    baseline: ort.InferenceSession,
    img_size: int,
    batch_sizes: tuple[int, ...],
    timing: Timing = DEFAULT_TIMING,
) -> LatencyPair:
    """Same protocol and inputs as sweeper.measure.compare_latency, in ONNX Runtime."""
    arrays = {b: x.numpy() for b, x in paired_inputs(img_size, batch_sizes).items()}
    return LatencyPair(paired_ratios(
        {b: (_timer(model, a), _timer(baseline, a)) for b, a in arrays.items()}, timing))


def accuracy(
    sess: ort.InferenceSession, data: Split | Pair, preprocessing: Preprocessing,
    batch_size: int = 256,
) -> float:
    data = as_split(data)
    correct = 0
    for xb, yb in data.batches(batch_size):
        logits = predict(sess, preprocessing.to_input(xb, "cpu").numpy())
        correct += int((torch.from_numpy(logits).argmax(-1) == yb).sum())
    return correct / max(1, len(data))


def measure(
    model: nn.Module,
    baseline: nn.Module,
    cfg: Config,
    device: torch.device,
    threads: int,
    ctx: TrialContext,
) -> tuple[LatencyPair, dict[str, float]]:
    """A trial's latency in ONNX Runtime, plus the ONNX graph's size and accuracy on
    `ctx.val` (metrics).

    Records the runtime, provider and kernels in `ctx.notes`; where quantized layers were
    lowered, `ctx.simulated` becomes whether any of them lacks a real low-bit ORT kernel.
    """
    img = ctx.preprocessing.img_size
    graph, report = onnx_bytes(model, img)
    sess = session(graph, device, threads)
    base_graph = float_onnx_bytes(copy.deepcopy(baseline).cpu(), img)
    base = session(base_graph, device, threads)
    m = cfg.measure
    latency = compare_latency(sess, base, img, m.batch_sizes, Timing.of(m))
    metrics = {
        "onnx_size_bytes": float(len(graph)),
        "onnx_size_mb": len(graph) / 1e6,
        "baseline_onnx_size_bytes": float(len(base_graph)),
        "ort_val_acc": accuracy(sess, ctx.val, ctx.preprocessing, m.eval_batch_size),
    }
    ctx.notes.update(runtime="onnxruntime", ort_provider=sess.get_providers()[0],
                     ort_kernels=report.describe(), onnxruntime=ort.__version__)
    if report.kernels:
        ctx.simulated = report.simulated
    return latency, metrics


def check_model(graph: bytes) -> None:
    """ONNX checker on a serialized graph (custom com.microsoft ops are not checked)."""
    onnx.checker.check_model(onnx.load_from_string(graph))
