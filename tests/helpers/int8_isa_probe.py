"""Run by tests/test_int8_isa.py in a subprocess whose environment caps the int8 kernels' ISA
(FBGEMM_ENABLE_INSTRUCTIONS for torch's fbgemm, ONEDNN_MAX_CPU_ISA for oneDNN). Prints, as JSON,
how far int8 layers stray from exact integer arithmetic on inputs that saturate int16 pairs,
and the outputs themselves, so the test can compare them across ISAs."""

from __future__ import annotations

import json

import numpy as np
import onnx
import torch
from torch import nn

from sweeper.compress.layers._packed import replace_linears
from sweeper.compress.layers._static import StaticInt8Linear, quiet
from sweeper.compress.onnx_lowering import to_onnx
from sweeper.core.config import ModelConfig
from sweeper.measure import runtime
from sweeper.models.vit import create_model


def _ort(model: nn.Module | onnx.ModelProto, x: torch.Tensor, img_size: int = 0) -> np.ndarray:
    proto = model if isinstance(model, onnx.ModelProto) else to_onnx(model, img_size)[0]
    return runtime.predict(runtime.session(proto.SerializeToString(), torch.device("cpu"), 1),
                           x.numpy())


def _export_linear(layer: nn.Module, k: int) -> onnx.ModelProto:
    """The ONNX lowering of one quantized Linear (wrapped so the exporter sees an image model)."""
    from sweeper.compress.onnx_lowering import export_float, float_twin, lower

    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = layer

        def forward(self, img: torch.Tensor) -> torch.Tensor:
            return self.fc(img.reshape(img.shape[0], -1)[:, :k])

    twin, lowerings = float_twin(Flat())
    proto = export_float(twin, 16)  # 3 x 16 x 16 = 768 inputs, the first k used
    lower(proto, lowerings)
    return proto


def worst_case_layers() -> dict[str, object]:
    """Weights at +-max and activations at the top code: 2 * 255 * 127 would overflow int16."""
    torch.manual_seed(0)
    k = 256
    lin = nn.Linear(k, 32)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(32, k).sign())
    img = torch.full((4, 3, 16, 16), 2.0)
    img[:, 0, 0, :8] = 0.0  # a few low codes, so the dynamic range starts at 0
    x = img.reshape(4, -1)[:, :k]

    static = StaticInt8Linear.from_linear(lin, 2.0 / 255, 0)
    wq, bias = static.weight_bias()
    q, ws = wq.int_repr().numpy().astype(np.int64), wq.q_per_channel_scales().numpy()
    exact_static = (np.round(x.numpy() * 255 / 2.0) @ q.T) * (2.0 / 255) * ws + bias.numpy()

    with quiet():
        dyn = torch.ao.quantization.quantize_dynamic(nn.Sequential(nn.Linear(k, 32)),
                                                     {nn.Linear}, dtype=torch.qint8)[0]
        dyn.set_weight_bias(torch.quantize_per_tensor(lin.weight.detach() * 1.0, 1 / 127.5, 0,
                                                      torch.qint8), lin.bias.detach())
        dq, dbias = dyn._packed_params._weight_bias()
    # 7-bit activation codes over [min(x, 0), max(x, 0)], as fbgemm and our lowering use
    xs = (max(float(x.max()), 0) - min(float(x.min()), 0)) / 127
    xz = np.clip(np.round(-min(float(x.min()), 0) / xs), 0, 127)
    xq = np.clip(np.round(x.numpy() / xs) + xz, 0, 127) - xz
    exact_dyn = (xq @ dq.int_repr().numpy().astype(np.int64).T) * xs * dq.q_scale() \
        + dbias.numpy()
    with torch.no_grad():
        return {
            "static_torch_vs_exact": float(np.abs(static(x).numpy() - exact_static).max()),
            "static_ort_vs_exact": float(np.abs(_ort(_export_linear(static, k), img)
                                                - exact_static).max()),
            "dynamic_torch_vs_exact": float(np.abs(dyn(x).numpy() - exact_dyn).max()),
            "dynamic_ort_vs_exact": float(np.abs(_ort(_export_linear(dyn, k), img)
                                                 - exact_dyn).max()),
        }


def whole_model() -> dict[str, float]:
    """A random-weight ViT, every Linear static int8: torch against its ONNX Runtime lowering."""
    torch.manual_seed(0)
    model = create_model(ModelConfig(img_size=32, embed_dim=64, depth=2, num_heads=2), 10).eval()
    x = torch.randn(16, 3, 32, 32) * 2
    replace_linears(model, lambda lin, _n: StaticInt8Linear.from_linear(lin, 8.0 / 255, 128))
    with torch.no_grad():
        ref = model(x).numpy()
    out = _ort(model, x, 32)
    return {"model_torch_vs_ort": float(np.abs(out - ref).max()),
            "model_argmax_agree": float((out.argmax(-1) == ref.argmax(-1)).mean())}


if __name__ == "__main__":
    print(json.dumps(worst_case_layers() | whole_model()))
