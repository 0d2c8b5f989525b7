"""A Hugging Face transformers ViT checkpoint (`ViTForImageClassification`, `ViTModel`: what
`Trainer.save_model()` writes as model.safetensors) as timm's VisionTransformer weights.

The two hold the same tensors under other names, except that transformers keeps query, key
and value as three Linears where timm has one `qkv` Linear: their rows are stacked in that
order, which is how timm splits `qkv`'s output into heads. The one difference in computation
is LayerNorm's epsilon (transformers 1e-12, timm 1e-6): a relative change of about 5e-7 in
the normalised activations of a trained model (variance near 1). transformers' ViT uses
exact GELU and a class-token head on the final LayerNorm, as timm's `vit_*` models do.
"""

from __future__ import annotations

import re

import torch

MARK = "embeddings.patch_embeddings.projection.weight"  # present in every transformers ViT
PREFIX = "vit."  # ViTForImageClassification's backbone; ViTModel has none

RENAMES = [  # transformers name (after PREFIX) -> timm name
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"blocks.\1.mlp.fc1."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"blocks.\1.mlp.fc2."),
    (r"^encoder\.layer\.(\d+)\.layernorm_before\.", r"blocks.\1.norm1."),
    (r"^encoder\.layer\.(\d+)\.layernorm_after\.", r"blocks.\1.norm2."),
    (r"^layernorm\.", "norm."),
    (r"^classifier\.", "head."),
]
QKV = re.compile(r"^encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)$")
# ViTModel's tanh pooler and masked-image-modelling token: no part of a classifier
UNUSED = re.compile(r"^(pooler\.|embeddings\.mask_token$)")


def is_transformers_vit(state: dict[str, torch.Tensor]) -> bool:
    return any(k == MARK or k == PREFIX + MARK for k in state)


def to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The timm names of a transformers ViT state_dict. A key neither layout knows is kept
    as it is, so the strict fit that follows names it."""
    out: dict[str, torch.Tensor] = {}
    parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        name = key.removeprefix(PREFIX)
        if UNUSED.match(name):
            continue
        qkv = QKV.match(name)
        if qkv:
            parts.setdefault((qkv[1], qkv[3]), {})[qkv[2]] = value
            continue
        for pattern, repl in RENAMES:
            renamed, hits = re.subn(pattern, repl, name)
            if hits:
                out[renamed] = value
                break
        else:
            out[key] = value
    for (block, kind), qkv_parts in parts.items():
        if set(qkv_parts) != {"query", "key", "value"}:
            for which, value in qkv_parts.items():  # incomplete: left for the fit to name
                out[f"encoder.layer.{block}.attention.attention.{which}.{kind}"] = value
            continue
        out[f"blocks.{block}.attn.qkv.{kind}"] = torch.cat(
            [qkv_parts["query"], qkv_parts["key"], qkv_parts["value"]])
    return out
