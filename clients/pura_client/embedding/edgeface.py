"""EdgeFace (Idiap; EdgeNeXt backbone, 512-d) in plain torch, from the dynamic-int8 state dicts.

Licence: the weights are **CC BY-NC-SA 4.0** — evaluation and non-commercial use only; the
registry marks them ``any_use=False`` and they are never the default.

The module reimplements timm's EdgeNeXt (``stem``, ``stages[i].downsample/blocks``, ConvBlock and
SplitTransposeBlock with cross-covariance attention, ``head.norm/fc``), written from the paper
and timm's structure so that the state dict's key names load unchanged (EdgeFace's wrapper adds
the ``model.`` prefix, stripped here). The stage layout (depths, widths, kernel sizes, heads,
scales, positional encoding) is read from the state dict's shapes, so XS and XXS share the code.

Why dequantise: the files hold ``Linear`` layers quantised with *dynamic* int8 quantisation,
which also quantises each call's activations with a range taken from the whole batch — so a
face's embedding depends on which other faces share its batch (up to 0.11 in the README's
measurement). Dequantising the int8 weights to float once (``(q − zero) · scale``, exactly the
values the quantised kernels multiply by) removes the batch dependence; the remaining difference
to the quantised model is its activation rounding, measured in the parity test.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (the universal torch idiom)
from torch import nn

from pura.errors import ConfigError
from pura_client.embedding.registry import ModelSpec, network_file, weight_path

EDGEFACE_DIM = 512
LN_EPS = 1e-6


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (timm's ``LayerNorm2d``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                         self.eps)
        return y.permute(0, 3, 1, 2)


class Mlp(nn.Module):
    """``fc1 → GELU → fc2`` on channel-last tensors."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc2(self.act(self.fc1(x)))
        return out


class ConvBlock(nn.Module):
    """Depthwise k×k conv → LayerNorm → MLP (×4) → layer scale, with a residual."""

    def __init__(self, dim: int, kernel: int) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, 4 * dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_dw(x).permute(0, 2, 3, 1)
        y = self.gamma * self.mlp(self.norm(y))
        out: torch.Tensor = x + y.permute(0, 3, 1, 2)
        return out


class PositionalEncodingFourier(nn.Module):
    """Sine/cosine encoding of normalised (y, x) positions, projected to ``dim`` by a 1×1 conv."""

    def __init__(self, dim: int, hidden: int = 32, temperature: float = 10000.0) -> None:
        super().__init__()
        self.token_projection = nn.Conv2d(2 * hidden, dim, 1)
        self.hidden = hidden
        self.temperature = temperature

    def forward(self, b: int, h: int, w: int) -> torch.Tensor:
        weight = self.token_projection.weight
        ones = torch.ones(b, h, w, device=weight.device, dtype=weight.dtype)
        y = ones.cumsum(1)
        x = ones.cumsum(2)
        y = y / (y[:, -1:, :] + 1e-6) * 2 * math.pi
        x = x / (x[:, :, -1:] + 1e-6) * 2 * math.pi
        steps = torch.arange(self.hidden, device=weight.device, dtype=weight.dtype)
        steps = self.temperature ** (2 * torch.div(steps, 2, rounding_mode="floor") / self.hidden)
        px, py = x[..., None] / steps, y[..., None] / steps
        px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
        py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
        out: torch.Tensor = self.token_projection(torch.cat((py, px), dim=3).permute(0, 3, 1, 2))
        return out


class CrossCovarianceAttn(nn.Module):
    """XCA: attention between *channels* (a C×C map per head), linear in the number of pixels."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 4, 1).unbind(0)
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = (attn * self.temperature).softmax(dim=-1)
        out: torch.Tensor = self.proj((attn @ v).permute(0, 3, 1, 2).reshape(b, n, c))
        return out


class SplitTransposeBlock(nn.Module):
    """Res2Net-style multi-scale depthwise convs, then XCA and an MLP (the "global" block)."""

    def __init__(self, dim: int, n_convs: int, heads: int, pos_emb: bool) -> None:
        super().__init__()
        width = math.ceil(dim / (n_convs + 1))
        self.convs = nn.ModuleList(
            nn.Conv2d(width, width, 3, padding=1, groups=width) for _ in range(n_convs)
        )
        self.pos_embd = PositionalEncodingFourier(dim) if pos_emb else None
        self.norm_xca = nn.LayerNorm(dim, eps=LN_EPS)
        self.gamma_xca = nn.Parameter(torch.ones(dim))
        self.xca = CrossCovarianceAttn(dim, heads)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, 4 * dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = x.chunk(len(self.convs) + 1, dim=1)
        outs: list[torch.Tensor] = []
        sp = parts[0]
        for i, conv in enumerate(self.convs):
            sp = conv(sp if i == 0 else sp + parts[i])
            outs.append(sp)
        outs.append(parts[-1])
        y = torch.cat(outs, 1)
        b, c, h, w = y.shape
        t = y.reshape(b, c, h * w).permute(0, 2, 1)
        if self.pos_embd is not None:
            t = t + self.pos_embd(b, h, w).reshape(b, c, h * w).permute(0, 2, 1)
        t = t + self.gamma_xca * self.xca(self.norm_xca(t))
        t = self.gamma * self.mlp(self.norm(t.reshape(b, h, w, c)))
        out: torch.Tensor = x + t.permute(0, 3, 1, 2)
        return out


class Stage(nn.Module):
    """Optional 2×2 stride-2 downsampling, then conv blocks and global blocks."""

    def __init__(self, blocks: list[nn.Module], downsample: nn.Module | None) -> None:
        super().__init__()
        self.downsample = downsample if downsample is not None else nn.Identity()
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.blocks(self.downsample(x))
        return out


class EdgeNeXt(nn.Module):
    """EdgeNeXt backbone + 512-d linear head (timm layout; see module docstring)."""

    def __init__(self, stages: list[Stage], stem_dim: int, head_dim: int, out_dim: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, stem_dim, 4, stride=4),
                                  LayerNorm2d(stem_dim, eps=LN_EPS))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(OrderedDict([
            ("norm", nn.LayerNorm(head_dim, eps=LN_EPS)),
            ("fc", nn.Linear(head_dim, out_dim)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.stages(self.stem(x)).mean(dim=(2, 3))  # global average pool
        out: torch.Tensor = self.head(feats)
        return out


class EdgeFaceNet(nn.Module):
    """``forward(chips)``: (n, 112, 112, 3) uint8 RGB → (n, 512) raw embeddings."""

    dim = EDGEFACE_DIM

    def __init__(self, model: EdgeNeXt) -> None:
        super().__init__()
        self.model = model

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        x = chips.permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (x/255 − 0.5)/0.5
        out: torch.Tensor = self.model(x)
        return out


def _stage_layout(keys: dict[str, Any], i: int) -> list[nn.Module]:
    prefix = f"stages.{i}.blocks."
    n_blocks = 1 + max(int(k[len(prefix):].split(".")[0]) for k in keys if k.startswith(prefix))
    blocks: list[nn.Module] = []
    for j in range(n_blocks):
        p = f"{prefix}{j}."
        if f"{p}conv_dw.weight" in keys:
            w = keys[f"{p}conv_dw.weight"]
            blocks.append(ConvBlock(int(w.shape[0]), int(w.shape[-1])))
        else:
            n_convs = sum(1 for k in keys if k.startswith(f"{p}convs.") and k.endswith(".weight"))
            dim = int(keys[f"{p}gamma"].shape[0])
            heads = int(keys[f"{p}xca.temperature"].shape[0])
            blocks.append(SplitTransposeBlock(dim, n_convs, heads,
                                              f"{p}pos_embd.token_projection.weight" in keys))
    return blocks


def dequantized_state_dict(raw: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Float state dict from a dynamic-int8 one: packed Linear weights → ``(q − z) · s``."""
    out: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        name = key.removeprefix("model.")
        if name.endswith("._packed_params._packed_params"):
            base = name.removesuffix("._packed_params._packed_params")
            weight, bias = value
            out[f"{base}.weight"] = weight.dequantize().float()
            out[f"{base}.bias"] = bias.detach().float()
        elif name.endswith(("._packed_params.dtype", ".scale", ".zero_point")):
            continue  # dynamic quantisation's bookkeeping (output scale unused)
        elif isinstance(value, torch.Tensor):
            out[name] = value.detach().float()
    return out


def build_edgenext(state: dict[str, torch.Tensor]) -> EdgeNeXt:
    """An EdgeNeXt shaped after ``state`` (float, ``model.`` prefix removed), weights loaded."""
    stages: list[Stage] = []
    for i in range(4):
        down = None
        if f"stages.{i}.downsample.1.weight" in state:
            w = state[f"stages.{i}.downsample.1.weight"]
            down = nn.Sequential(LayerNorm2d(int(w.shape[1]), eps=LN_EPS),
                                 nn.Conv2d(int(w.shape[1]), int(w.shape[0]), 2, stride=2))
        stages.append(Stage(_stage_layout(state, i), down))
    fc = state["head.fc.weight"]
    model = EdgeNeXt(stages, int(state["stem.0.weight"].shape[0]), int(fc.shape[1]),
                     int(fc.shape[0]))
    model.load_state_dict(state, strict=True)
    return model.eval()


def read_state_dict(path: Path) -> dict[str, Any]:
    """``torch.load`` of an EdgeFace file (it holds quantised tensors, so not weights-only)."""
    try:
        raw: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # pickle/zip errors come in many types
        kind = type(exc).__name__
        raise ConfigError(f"cannot read EdgeFace weights {path.name}: {kind}") from exc
    return raw


def load_edgeface(spec: ModelSpec) -> EdgeFaceNet:
    """EdgeFace XS/XXS with float (dequantised) weights; SHA-256 checked before unpickling.

    The hash check matters more than usual here: ``torch.load`` without ``weights_only`` runs
    pickle, so only the pinned bytes may ever reach it.
    """
    if not spec.network.startswith("edgeface-"):
        raise ConfigError(f"model {spec.model_id!r} is not an EdgeFace model")
    raw = read_state_dict(weight_path(network_file(spec)))
    return EdgeFaceNet(build_edgenext(dequantized_state_dict(raw))).eval()
