"""Knowledge distillation from the uncompressed baseline (ctx.teacher) into a student.

student="self": the model arriving at this stage (pruned, merged, ...) is the student.
student="vit": a new, smaller timm ViT (depth / embed_dim / num_heads; 0 = the teacher's)
is trained from scratch and replaces the model, so no earlier technique may precede it
(`replaces_model`, checked by compress.validate_pipeline).

kind (loss = (1 - alpha) * CE(labels, smoothing 0.1) + alpha * teacher term):
- soft: Hinton KL to the teacher's softened distribution at temperature T (scaled by T^2);
- hard: cross-entropy to the teacher's argmax labels (temperature unused);
- deit: DeiT's distillation token (timm VisionTransformerDistilled): the class head learns
  the labels, the distillation head the teacher's argmax; inference averages both heads.

The default T is 2, not Hinton's 4: the baseline is trained with label smoothing, so its
logits are already soft, and at T=4 its distribution is nearly flat (on the embedded default
the top class then gets ~0.26), which carries little signal.

Teacher logits are computed once per training split and cached in-process, keyed by a hash of
the teacher's weights, the data and the views. Augmentation stays consistent with them: the
split is seen through `views` fixed copies (view 0 as is, the others shifted by up to 2 pixels,
train.fit's augmentation), whose teacher logits are all computed once; each step shows every
image through a random one of its views, with that view's teacher logits. This costs `views`
teacher passes over the split once, instead of one per augmented batch of every epoch, and
the student is never taught on an image the teacher did not see. Only ctx.train is used.
On the embedded default, views=1 suits short recovery of a compressed model (3 epochs after
30% structured pruning: no accuracy lost; 4 views: -0.7 points), and views=4 a student from
scratch given 40 epochs (~96-97% against ~90% with views=1).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from sweeper.compress import TechniqueConfig, TrialContext, param, register
from sweeper.core.checks import check_choice, check_float, check_int
from sweeper.data.split import Split
from sweeper.models.train import FitSettings, kd_loss, warmup_cosine
from sweeper.models.vit import count_parameters

KINDS = ("soft", "hard", "deit")
STUDENTS = ("self", "vit")
LABEL_SMOOTHING = FitSettings.label_smoothing
CACHE_ENTRIES = 4  # teacher logits kept per process (CIFAR-100, 4 views: ~80 MB)
PAD = 2  # pixels of shift augmentation, as train.fit
_LOGITS: OrderedDict[str, torch.Tensor] = OrderedDict()


@dataclass(frozen=True)
class DistillConfig(TechniqueConfig):
    student: str = "self"
    depth: int = 0  # student="vit" only; 0 = the teacher's
    embed_dim: int = 0
    num_heads: int = 0
    kind: str = "soft"
    temperature: float = param(2.0, short="T")  # soft only
    alpha: float = param(0.5, short="a")  # weight of the teacher term
    epochs: int = param(10, short="ep")
    lr: float = 1e-3
    views: int = 1  # copies of the training split (1: as is; more: shifted, augmentation)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("student", self.student, STUDENTS)
        check_choice("kind", self.kind, KINDS)
        check_int("depth", self.depth, 0, 48)
        check_int("embed_dim", self.embed_dim, 0, 8192)
        check_int("num_heads", self.num_heads, 0, 64)
        check_int("epochs", self.epochs, 0, 1000)
        check_int("views", self.views, 1, 16)
        if self.student == "self" and (self.depth or self.embed_dim or self.num_heads):
            raise ValueError("depth, embed_dim and num_heads apply to student='vit' only")
        if self.embed_dim and self.num_heads and self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim={self.embed_dim} not divisible by "
                             f"num_heads={self.num_heads}")
        check_float("temperature", self.temperature, 0, 1000, low_open=True)
        check_float("alpha", self.alpha, 0, 1)
        check_float("lr", self.lr, 0, 1, low_open=True)
        if self.kind == "deit" and self.student == "self":
            raise ValueError("kind='deit' needs a new student with a distillation token "
                             "(student='vit'); with student='self' use soft or hard")
        if self.kind == "deit" and self.alpha == 0:
            raise ValueError("kind='deit' with alpha=0 would leave the distillation head "
                             "untrained")

    @property
    def replaces_model(self) -> bool:
        return self.student != "self"


def build_student(teacher: VisionTransformer, cfg: DistillConfig, seed: int) -> nn.Module:
    """A ViT shaped like `teacher` but for depth / width / heads (0 = the teacher's)."""
    attn = teacher.blocks[0].attn
    embed_dim = cfg.embed_dim or teacher.embed_dim
    num_heads = cfg.num_heads or attn.num_heads
    if embed_dim % num_heads:
        raise ValueError(f"student embed_dim={embed_dim} not divisible by num_heads={num_heads}")
    cls = VisionTransformerDistilled if cfg.kind == "deit" else VisionTransformer
    torch.manual_seed(seed)
    student = cls(
        img_size=teacher.patch_embed.img_size,
        patch_size=teacher.patch_embed.patch_size,
        in_chans=teacher.patch_embed.proj.in_channels,
        num_classes=teacher.num_classes,
        embed_dim=embed_dim,
        depth=cfg.depth or len(teacher.blocks),
        num_heads=num_heads,
        mlp_ratio=teacher.blocks[0].mlp.fc1.out_features / teacher.embed_dim,
        qkv_bias=attn.qkv.bias is not None,
    )
    return student.to(next(teacher.parameters()).device)


def view_offsets(n: int, views: int, seed: int) -> torch.Tensor:
    """(views, n, 2) crop offsets into the padded images; view 0 is the image as it is."""
    gen = torch.Generator().manual_seed(seed)
    offsets = torch.randint(0, 2 * PAD + 1, (views, n, 2), generator=gen)
    offsets[0] = PAD
    return offsets


def shifted(images: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Each uint8 image translated by its (dx, dy) offset, zero fill (as train.random_shift)."""
    _, _, h, w = images.shape
    padded = F.pad(images, (PAD, PAD, PAD, PAD))
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w]
                        for i, (dx, dy) in enumerate(offsets.tolist())])


def _fingerprint(teacher: nn.Module, data: Split, offsets: torch.Tensor,
                 ctx: TrialContext) -> str:
    h = hashlib.sha256(repr(ctx.preprocessing).encode())
    for key, value in teacher.state_dict().items():
        h.update(key.encode())
        if isinstance(value, torch.Tensor):
            h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    data.feed(h)  # pixels in memory; a streamed split's files, sizes and times
    h.update(offsets.numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()  # not inference_mode: the logits are used in autograd later
def teacher_logits(
    teacher: nn.Module, data: Split, offsets: torch.Tensor, ctx: TrialContext
) -> tuple[torch.Tensor, bool]:
    """(views, n, classes) teacher logits on every view of every image of `data` (CPU
    float32), and whether they came from the cache."""
    key = _fingerprint(teacher, data, offsets, ctx)
    if key in _LOGITS:
        _LOGITS.move_to_end(key)
        return _LOGITS[key], True
    teacher.eval()
    prep = ctx.preprocessing
    out = [torch.cat([teacher(prep.to_input(shifted(x, view[idx]), ctx.device)).float().cpu()
                      for idx, x, _y in data.indexed(256)])
           for view in offsets]
    _LOGITS[key] = torch.stack(out)
    while len(_LOGITS) > CACHE_ENTRIES:
        _LOGITS.popitem(last=False)
    return _LOGITS[key], False


def distill_loss(
    out: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
    labels: torch.Tensor,
    targets: torch.Tensor | None,
    cfg: DistillConfig,
) -> torch.Tensor:
    cls, dist = out if isinstance(out, tuple) else (out, out)
    loss = F.cross_entropy(cls, labels, label_smoothing=LABEL_SMOOTHING)
    if targets is None or cfg.alpha == 0:
        return loss
    if cfg.kind == "soft":
        teach = kd_loss(cls, targets, cfg.temperature)
    else:  # hard, deit: the teacher's decision as label (on the distillation head for deit)
        teach = F.cross_entropy(dist, targets.argmax(dim=-1))
    return (1 - cfg.alpha) * loss + cfg.alpha * teach


def train_student(
    student: nn.Module, train: Split, offsets: torch.Tensor, targets: torch.Tensor | None,
    cfg: DistillConfig, ctx: TrialContext,
) -> nn.Module:
    """AdamW, linear warm-up then cosine decay (as train.fit); each image through a random
    one of its views, with that view's teacher logits (see top)."""
    gen = torch.Generator().manual_seed(ctx.seed)
    torch.manual_seed(ctx.seed)
    student.to(ctx.device).train()
    deit = isinstance(student, VisionTransformerDistilled)
    if deit:
        student.set_distilled_training(True)  # forward returns (class, distillation) logits
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=ctx.weight_decay)
    sched = warmup_cosine(opt, cfg.epochs, math.ceil(len(train) / ctx.batch_size),
                          min(1.0, cfg.epochs / 4))
    for epoch in range(cfg.epochs):
        if epoch and ctx.on_epoch is not None:  # the rung after `epoch` epochs
            ctx.on_epoch(student, epoch)
        for idx, xb, yb in train.indexed(ctx.batch_size, shuffle=True, generator=gen):
            view = torch.randint(0, len(offsets), (len(idx),), generator=gen)
            x = ctx.preprocessing.to_input(shifted(xb, offsets[view, idx]), ctx.device)
            t = None if targets is None else targets[view, idx].to(ctx.device)
            loss = distill_loss(student(x), yb.to(ctx.device), t, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
    if deit:
        student.set_distilled_training(False)
    return student.eval()


@register("distill", "recover", DistillConfig,
          example=DistillConfig(student="vit", depth=1, embed_dim=32, num_heads=2, alpha=0.0,
                                epochs=1))
def apply(model: nn.Module, cfg: DistillConfig, ctx: TrialContext) -> nn.Module:
    teacher = ctx.teacher
    # The arriving model is the shape template, also in structure_only (where no teacher is
    # given): validate_pipeline lets a new student follow no other technique.
    student = build_student(model, cfg, ctx.seed) if cfg.replaces_model else model
    if ctx.structure_only or cfg.epochs == 0:
        return student
    if ctx.train is None:
        raise ValueError("distill needs training data in the trial context")
    offsets = view_offsets(len(ctx.train), cfg.views, ctx.seed)
    targets, cached = None, False
    if cfg.alpha > 0:
        if teacher is None:
            raise ValueError("distill with alpha > 0 needs the baseline as ctx.teacher")
        targets, cached = teacher_logits(teacher, ctx.train, offsets, ctx)
    ctx.notes.update({
        "distill_student": cfg.student, "distill_kind": cfg.kind,
        "distill_params": count_parameters(student), "distill_teacher_cached": cached,
    })
    return train_student(student, ctx.train, offsets, targets, cfg, ctx)
