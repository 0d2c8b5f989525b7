"""Lower a compressed PyTorch model to an ONNX graph that runs ONNX Runtime's own kernels.

The exporter cannot trace quantized modules, so each one is first replaced by a float
nn.Linear holding its dequantized weight (the "float twin"), the twin is exported, and every
MatMul/Gemm whose constant weight equals one of those dequantized weights (bit for bit) is
rewritten with the stored integer weights and scales, unchanged:

- dynamic int8 -> per-tensor 7-bit QuantizeLinear (as fbgemm's dynamic Linear) + MatMulInteger
- static int8  -> QuantizeLinear with the calibrated scale + MatMulInteger, float output
- packed 2/4/8 bits -> com.microsoft MatMulNBits (weights stay packed; accuracy_level 0:
  float activations, so the numbers match the PyTorch model's)
- packed 3/5/6/7 bits (no ORT kernel) -> the packed bytes plus an unpacking subgraph that ORT
  constant-folds at session start: the file is packed, the compute is float (simulated)
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from sweeper.compress.layers import PackedLinear, StaticInt8Linear, WeightSpec, pack, quiet

OPSET = 18
MS_DOMAIN = "com.microsoft"
MAX_BLOCK = {2: 256, 4: 2048, 8: 2048}  # bit widths MatMulNBits implements, largest block
DynamicLinear = torch.ao.nn.quantized.dynamic.Linear


@dataclass
class Lowering:
    """How one quantized Linear becomes ONNX nodes; `weight` locates it in the graph."""

    name: str
    kind: str  # dynamic_int8 | static_int8 | nbits | packed_float
    weight: np.ndarray  # dequantized float32 [N, K], as in the float twin
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return _digest(self.weight)


@dataclass
class LoweringReport:
    kernels: dict[str, int] = field(default_factory=dict)  # kind -> count

    @property
    def simulated(self) -> bool:
        return self.kernels.get("packed_float", 0) > 0

    def describe(self) -> str:
        return ",".join(f"{k}:{v}" for k, v in sorted(self.kernels.items())) or "float"


def _digest(a: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(a, dtype=np.float32).tobytes()).hexdigest()


def _qtensor_parts(w: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """int8 values [N, K], scale and zero point (scalars or per output channel)."""
    if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        scale = w.q_per_channel_scales().float().numpy()
        zero = w.q_per_channel_zero_points().numpy().astype(np.int8)
    else:
        scale = np.array(w.q_scale(), dtype=np.float32)
        zero = np.array(w.q_zero_point(), dtype=np.int8)
    return w.int_repr().numpy(), scale, zero


def _nbits_block(spec: WeightSpec, k: int) -> int | None:
    """MatMulNBits block size for this layer, or None where the kernel cannot take it.

    Blocks are powers of two from 16 up to MAX_BLOCK[bits] (ORT rejects 2-bit blocks above
    256); a group that is a multiple of the block (per-channel: the whole row) repeats its
    scale over the blocks it spans.
    """
    if spec.bits not in MAX_BLOCK:
        return None
    group = spec.group(k)
    block = 16
    while group % (block * 2) == 0 and block * 2 <= MAX_BLOCK[spec.bits]:
        block *= 2
    return block if group % block == 0 else None


def _lowering(name: str, m: nn.Module) -> tuple[Lowering, nn.Linear] | None:
    if isinstance(m, DynamicLinear | StaticInt8Linear):
        with quiet():
            wq, bias = m._packed_params._weight_bias()
            w = wq.dequantize()
        q, scale, zero = _qtensor_parts(wq)
        params = {"q": q, "scale": scale, "zero": zero}
        if isinstance(m, StaticInt8Linear):
            kind = "static_int8"
            params |= {"x_scale": float(m.input_scale), "x_zero": int(m.input_zero_point)}
        else:
            kind = "dynamic_int8"
    elif isinstance(m, PackedLinear):
        w, bias = m.dequantized_weight(), m.bias
        spec = m.spec
        block = _nbits_block(spec, m.in_features)
        kind = "nbits" if block else "packed_float"
        params = {"spec": spec, "block": block, "packed": m.packed.cpu().numpy(),
                  "scale": m.scale.float().cpu().numpy(),
                  "zero": None if spec.symmetric else m.zero.cpu().numpy()}
    else:
        return None
    w = w.detach().float().cpu()
    twin = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
    with torch.no_grad():
        twin.weight.copy_(w)
        if bias is not None:
            twin.bias.copy_(bias.detach().float().cpu())
    return Lowering(name, kind, w.numpy(), params), twin


def float_twin(model: nn.Module) -> tuple[nn.Module, list[Lowering]]:
    """A float copy of `model` with every quantized Linear replaced by its dequantized twin."""
    twin = copy.deepcopy(model).cpu().eval()
    lowerings = []
    for name, m in list(twin.named_modules()):
        found = _lowering(name, m)
        if found is None:
            continue
        lowering, linear = found
        parent_name, _, attr = name.rpartition(".")
        setattr(twin.get_submodule(parent_name) if parent_name else twin, attr, linear)
        lowerings.append(lowering)
    return twin, lowerings


def export_float(model: nn.Module, img_size: int) -> onnx.ModelProto:
    """torch.onnx.export (dynamo exporter, opset 18) with a dynamic batch dimension."""
    x = torch.randn(2, 3, img_size, img_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                model.eval(), (x,), dynamo=True, opset_version=OPSET, verbose=False,
                input_names=["input"], output_names=["logits"],
                dynamic_shapes=({0: torch.export.Dim("batch")},),  # positional: any arg name
            )
        except Exception as exc:  # the exporter raises many types; keep the first cause
            cause = exc.__cause__ or exc
            raise RuntimeError(
                f"cannot export {type(model).__name__} to ONNX (needed by "
                f"measure.runtime=onnxruntime and export format=onnx): {str(cause)[:300]}"
            ) from exc
    proto = program.model_proto
    for node in proto.graph.node:  # drop per-node stack traces (local paths, ~1 KB a node)
        del node.metadata_props[:]
        node.doc_string = ""
    return proto


class _Graph:
    """Helpers to add constants and nodes with unique names."""

    def __init__(self, proto: onnx.ModelProto):
        self.graph = proto.graph
        self.inits = {t.name: t for t in self.graph.initializer}
        self.count = 0
        self.shared: dict[tuple[str, tuple[int, ...], bytes], str] = {}

    def name(self, stem: str) -> str:
        self.count += 1
        return f"sweeper_{stem}_{self.count}"

    def const(self, stem: str, array: np.ndarray) -> str:
        array = np.asarray(array)
        key = (array.dtype.str, array.shape, array.tobytes())
        if array.size <= 16 and key in self.shared:  # shapes, shifts...: one copy per graph
            return self.shared[key]
        name = self.shared[key] = self.name(stem)
        self.graph.initializer.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str] | None = None,
             domain: str = "", **attrs: Any) -> list[str]:
        outputs = outputs or [self.name(op.lower())]
        self.new.append(helper.make_node(op, inputs, outputs, name=self.name(op),
                                         domain=domain, **attrs))
        return outputs

    new: list[onnx.NodeProto]


def _quantize_7bit(g: _Graph, x: str) -> tuple[str, str, str]:
    """(codes, scale, zero point) of `x` per tensor over [min(x, 0), max(x, 0)] in uint8
    0..127, as fbgemm's dynamic int8 Linear does (reduce_range). ORT's DynamicQuantizeLinear
    would use 0..255, and uint8 x int8 pairs up to 255 * 128 * 2 overflow int16 in the int8
    kernels of CPUs without VNNI (see _static.py). 7-bit codes are exact on every x86 CPU,
    keep ORT's fast uint8 x int8 kernel (uint8 weights would run 2x slower on VNNI) and give
    the same codes as the PyTorch model."""
    zero = g.const("zero", np.array(0.0, dtype=np.float32))
    qmax = g.const("q127", np.array(127.0, dtype=np.float32))
    lo = g.node("Min", [g.node("ReduceMin", [x], keepdims=0)[0], zero])[0]
    hi = g.node("Max", [g.node("ReduceMax", [x], keepdims=0)[0], zero])[0]
    scale = g.node("Div", [g.node("Sub", [hi, lo])[0], qmax])[0]
    scale = g.node("Max", [scale, g.const("tiny", np.array(1e-8, dtype=np.float32))])[0]
    zp = g.node("Round", [g.node("Neg", [g.node("Div", [lo, scale])[0]])[0]])[0]
    zp = g.node("Cast", [g.node("Clip", [zp, zero, qmax])[0]], to=TensorProto.UINT8)[0]
    return g.node("QuantizeLinear", [x, scale, zp])[0], scale, zp


def _int8_matmul(g: _Graph, low: Lowering, x: str, out: str) -> None:
    p = low.params
    wq = g.const("wq", np.ascontiguousarray(p["q"].T))  # [K, N]
    w_zero = g.const("wzp", p["zero"])
    if low.kind == "dynamic_int8":
        xq, xs, xz = _quantize_7bit(g, x)
        scale = g.node("Mul", [xs, g.const("ws", p["scale"])])[0]
    else:
        xs = g.const("xs", np.array(p["x_scale"], dtype=np.float32))
        xz = g.const("xz", np.array(p["x_zero"], dtype=np.uint8))
        xq = g.node("QuantizeLinear", [x, xs, xz])[0]
        scale = g.const("s", (p["x_scale"] * p["scale"]).astype(np.float32))
    acc = g.node("MatMulInteger", [xq, wq, xz, w_zero])[0]
    acc_f = g.node("Cast", [acc], to=TensorProto.FLOAT)[0]
    g.node("Mul", [acc_f, scale], [out])


def _nbits_matmul(g: _Graph, low: Lowering, x: str, out: str) -> None:
    p, spec = low.params, low.params["spec"]
    n, k = low.weight.shape
    block = p["block"]
    repeat = k // block // p["scale"].shape[1]  # >1 when per-channel scales span many blocks
    blob = p["packed"].reshape(n, k // block, block * spec.bits // 8)
    inputs = [x, g.const("nbits_b", blob),
              g.const("nbits_scale", np.repeat(p["scale"], repeat, axis=1).astype(np.float32))]
    if p["zero"] is not None:
        zero = np.repeat(p["zero"], repeat, axis=1)
        per_byte = 8 // spec.bits
        zero = np.pad(zero, ((0, 0), (0, (-zero.shape[1]) % per_byte)))
        packed_zero = pack(torch.from_numpy(zero), spec.bits).numpy().reshape(n, -1)
        inputs.append(g.const("nbits_zp", packed_zero))
    g.node("MatMulNBits", inputs, [out], domain=MS_DOMAIN, K=k, N=n, bits=spec.bits,
           block_size=block, accuracy_level=0)


def _packed_float_matmul(g: _Graph, low: Lowering, x: str, out: str) -> None:
    """Unpack the bit stream in-graph (BitShift/BitwiseAnd), dequantize, MatMul."""
    p, spec = low.params, low.params["spec"]
    n, k = low.weight.shape
    groups = p["scale"].shape[1]
    numel = n * k
    bytes_col = g.node("Unsqueeze", [g.const("packed", p["packed"]),
                                     g.const("axes", np.array([1], dtype=np.int64))])[0]
    bits = g.node("BitShift", [bytes_col, g.const("shifts", np.arange(8, dtype=np.uint8))],
                  direction="RIGHT")[0]
    bits = g.node("BitwiseAnd", [bits, g.const("one", np.array(1, dtype=np.uint8))])[0]
    stream = g.node("Reshape", [bits, g.const("flat", np.array([-1], dtype=np.int64))])[0]
    stream = g.node("Slice", [stream, g.const("start", np.array([0], dtype=np.int64)),
                              g.const("end", np.array([numel * spec.bits], dtype=np.int64))])[0]
    stream = g.node("Reshape", [stream, g.const("shape", np.array([numel, spec.bits],
                                                                  dtype=np.int64))])[0]
    stream = g.node("Cast", [stream], to=TensorProto.INT32)[0]
    weights = (1 << np.arange(spec.bits)).astype(np.int32)
    codes = g.node("Mul", [stream, g.const("pow2", weights)])[0]
    codes = g.node("ReduceSum", [codes, g.const("axis", np.array([1], dtype=np.int64))],
                   keepdims=0)[0]
    codes = g.node("Cast", [codes], to=TensorProto.FLOAT)[0]
    codes = g.node("Reshape", [codes, g.const("grouped", np.array([n, groups, k // groups],
                                                                  dtype=np.int64))])[0]
    # scales and zero points stay float16 / uint8 in the file, as in the PyTorch artifact
    if spec.symmetric:
        offset = g.const("offset", np.array(spec.half, dtype=np.float32))
    else:
        offset = g.node("Cast", [g.const("zero", p["zero"][..., None])], to=TensorProto.FLOAT)[0]
    scale = g.const("scale", p["scale"][..., None].astype(np.float16))
    w = g.node("Sub", [codes, offset])[0]
    w = g.node("Mul", [w, g.node("Cast", [scale], to=TensorProto.FLOAT)[0]])[0]
    w = g.node("Reshape", [w, g.const("nk", np.array([n, k], dtype=np.int64))])[0]
    w_t = g.node("Transpose", [w], perm=[1, 0])[0]
    g.node("MatMul", [x, w_t], [out])


LOWER = {"dynamic_int8": _int8_matmul, "static_int8": _int8_matmul,
         "nbits": _nbits_matmul, "packed_float": _packed_float_matmul}


def _weight_of(node: onnx.NodeProto, g: _Graph) -> tuple[str, np.ndarray] | None:
    """(initializer name, weight as [N, K]) of a MatMul/Gemm with a constant 2-D weight."""
    if node.op_type not in ("MatMul", "Gemm") or node.input[1] not in g.inits:
        return None
    arr = numpy_helper.to_array(g.inits[node.input[1]])
    if arr.ndim != 2:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Gemm":
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1 or attrs.get("beta", 1.0) != 1:
            return None
        return node.input[1], arr if attrs.get("transB", 0) else arr.T
    return node.input[1], arr.T


def lower(proto: onnx.ModelProto, lowerings: list[Lowering]) -> LoweringReport:
    """Rewrite, in place, the MatMul/Gemm nodes of `lowerings` (see the module docstring)."""
    pending: dict[str, list[Lowering]] = {}
    for low in lowerings:
        pending.setdefault(low.key, []).append(low)
    g = _Graph(proto)
    report = LoweringReport()
    nodes, replaced = [], set()
    for node in proto.graph.node:
        found = _weight_of(node, g)
        queue = pending.get(_digest(found[1])) if found else None
        if not queue:
            nodes.append(node)
            continue
        low = queue.pop(0)
        g.new = []
        out = node.output[0]
        mm_out = g.name("mm") if node.op_type == "Gemm" and len(node.input) > 2 else out
        LOWER[low.kind](g, low, node.input[0], mm_out)
        if mm_out != out:  # Gemm's bias
            g.node("Add", [mm_out, node.input[2]], [out])
        nodes.extend(g.new)
        replaced.add(found[0])  # type: ignore[index]
        report.kernels[low.kind] = report.kernels.get(low.kind, 0) + 1
    missing = [low.name for queue in pending.values() for low in queue]
    if missing:
        raise RuntimeError(f"ONNX lowering: weights of {', '.join(missing)} not found in graph")
    _replace_nodes(proto, nodes, replaced)
    if report.kernels.get("nbits"):
        proto.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return report


def _replace_nodes(proto: onnx.ModelProto, nodes: list[Any], replaced: set[str]) -> None:
    """The graph's nodes become `nodes`; float weights no node reads any more are dropped."""
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    used = {i for n in proto.graph.node for i in n.input}
    keep = [t for t in proto.graph.initializer if t.name in used or t.name not in replaced]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)


def to_onnx(model: nn.Module, img_size: int) -> tuple[onnx.ModelProto, LoweringReport]:
    """The deployable ONNX graph of a (possibly quantized) model and what kernels it uses."""
    twin, lowerings = float_twin(model)
    proto = export_float(twin, img_size)
    return proto, lower(proto, lowerings)
