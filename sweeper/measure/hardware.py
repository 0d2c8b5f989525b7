"""What CPU this is: its model name and the x86 instruction sets int8 kernels dispatch on.

Int8 GEMMs pick their kernel by ISA (AVX2, AVX-512, VNNI, AMX), so the same model can run a
different kernel, at a different speed, on another machine; every published figure names these.
"""

from __future__ import annotations

import hashlib
import platform
from functools import cache
from pathlib import Path

# the flags that change which int8 / float kernels fbgemm, oneDNN and ONNX Runtime's MLAS run
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
                "avx512_bf16", "amx_tile", "amx_int8")


@cache
def _cpuinfo() -> dict[str, str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    first = text.split("\n\n", 1)[0]
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in
                                                  first.splitlines())}


def cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_flags() -> frozenset[str]:
    return frozenset(_cpuinfo().get("flags", "").split())


def isa_summary() -> str:
    """e.g. 'avx2,fma,avx512f,avx512bw,avx512_vnni': the kernel-relevant flags present."""
    flags = cpu_flags()
    return ",".join(f for f in KERNEL_FLAGS if f in flags) or platform.machine()


def has_vnni() -> bool:
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())


def fingerprint(tags: dict[str, str]) -> str:
    """A short hash of what a latency ratio depends on: CPU model and ISA, GPU, thread count,
    runtime and library versions (the trial's hardware tags). Ratios measured under two
    fingerprints are not comparable, so a front holds one."""
    keys = ("cpu", "cpu_isa", "gpu", "threads", "device", "runtime", "torch", "timm",
            "onnxruntime")
    text = "|".join(f"{k}={tags.get(k, '')}" for k in keys)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def machine() -> dict[str, str]:
    """This machine as sweep.json records it, to tell a resume elsewhere."""
    return {"cpu": cpu_model(), "cpu_isa": isa_summary(), "node": platform.node()}
