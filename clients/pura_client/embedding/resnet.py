"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``) as a torch module.

The network is the "metric learning" ResNet of dlib's ``dnn_face_recognition_ex.cpp`` (29 conv
layers, batch norm folded into ``affine`` layers)::

    input_rgb_image_sized<150>         x = (pixel - channel mean) / 256
    con<32,7,7,2,2> affine relu        stride-2 convs in dlib have *no* padding
    max_pool<3,3,2,2>                  (150 → 72 → 35)
    alevel4: 3 × ares<32>              ares: relu(x + affine(con3x3(relu(affine(con3x3(x))))))
    alevel3: ares_down<64>  + 3 × ares<64>       ares_down: the first con has stride 2 and the
    alevel2: ares_down<128> + 2 × ares<128>      shortcut is avg_pool<2,2,2,2>(x)
    alevel1: ares_down<256> + 2 × ares<256>
    alevel0: ares_down<256>
    avg_pool_everything, fc_no_bias<128>

Two dlib details matter for bit-level parity: stride-2 convolutions and poolings use zero
padding (dlib's default padding is ``size/2`` only for stride 1), and ``add_prev`` adds tensors of
*different* shapes by zero-extending the smaller one at the end of each axis (channels 32→64, and
in alevel1 a 3×3 block output added to a 4×4 pooled shortcut). The weights come from the
package's ``.dat`` file through :mod:`pura_client.embedding.dlib_format`; the loader checks every
layer's type, hyper-parameters and shapes against this architecture before copying.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812 (torch convention)
from torch import nn

from pura.errors import ConfigError
from pura_client.embedding.dlib_format import MARKER, Layer, Network, read_network
from pura_client.embedding.models import RESNET_FILE, model_file

CHIP_SIZE = 150
DESCRIPTOR_DIM = 128

# (channels, number of plain residual blocks, starts with a downsampling block), input-first.
_LEVELS: tuple[tuple[int, int, bool], ...] = (
    (32, 3, False),
    (64, 3, True),
    (128, 2, True),
    (256, 2, True),
    (256, 0, True),
)


class Affine(nn.Module):
    """dlib ``affine_`` in conv mode: per-channel ``gamma * x + beta`` (a folded batch norm)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels), requires_grad=False)
        self.beta = nn.Parameter(torch.zeros(channels), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)


def add_zero_extended(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib ``add_prev``: sum of two NCHW tensors, the smaller zero-extended at the far ends."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def grow(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return grow(a) + grow(b)


class ResidualBlock(nn.Module):
    """``ares`` (stride 1, identity shortcut) or ``ares_down`` (stride 2, avg-pooled shortcut)."""

    def __init__(self, in_channels: int, channels: int, downsample: bool) -> None:
        super().__init__()
        stride = 2 if downsample else 1
        self.downsample = downsample
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, padding=0 if downsample else 1)
        self.affine1 = Affine(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, padding=1)
        self.affine2 = Affine(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.downsample else x
        return F.relu(add_zero_extended(y, shortcut))

    def dlib_layers(self) -> Iterator[tuple[str, nn.Module | None]]:
        """This block's layers in dlib's file order (input-first, tags/skips as markers)."""
        yield MARKER, None  # tag1
        yield "con_4", self.conv1
        yield "affine_", self.affine1
        yield "relu_", None
        yield "con_4", self.conv2
        yield "affine_", self.affine2
        if self.downsample:
            yield MARKER, None  # tag2
            yield MARKER, None  # skip1
            yield "avg_pool_2", None
        yield "add_prev_", None
        yield "relu_", None


class DlibFaceResNet(nn.Module):
    """150×150 RGB chips (uint8 NHWC or float NCHW in 0..255) → 128-d descriptors (float32)."""

    mean: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 32, 7, 2, padding=0)
        self.affine = Affine(32)
        blocks: list[ResidualBlock] = []
        channels = 32
        for width, plain, down in _LEVELS:
            if down:
                blocks.append(ResidualBlock(channels, width, downsample=True))
            blocks.extend(ResidualBlock(width, width, downsample=False) for _ in range(plain))
            channels = width
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(channels, DESCRIPTOR_DIM, bias=False)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        x = self.normalise(chips)
        x = F.max_pool2d(F.relu(self.affine(self.conv(x))), 3, 2)
        for block in self.blocks:
            x = block(x)
        descriptors: torch.Tensor = self.fc(x.mean(dim=(2, 3)))
        return descriptors

    def normalise(self, chips: torch.Tensor) -> torch.Tensor:
        """dlib ``input_rgb_image``: ``(pixel - mean) / 256`` per channel, NCHW float32."""
        if chips.dtype == torch.uint8:
            chips = chips.permute(0, 3, 1, 2)
        x = chips.to(self.mean.dtype)
        if tuple(x.shape[1:]) != (3, CHIP_SIZE, CHIP_SIZE):
            raise ConfigError(f"chips must be 3x{CHIP_SIZE}x{CHIP_SIZE}, got {tuple(x.shape)}")
        return (x - self.mean) / 256.0

    def dlib_layers(self) -> Iterator[tuple[str, nn.Module | None]]:
        """Every layer in dlib's file order, paired with the module that takes its weights."""
        yield "input_rgb_image_sized", None
        yield "con_4", self.conv
        yield "affine_", self.affine
        yield "relu_", None
        yield "max_pool_2", None
        for block in self.blocks:
            assert isinstance(block, ResidualBlock)
            yield from block.dlib_layers()
        yield "avg_pool_2", None
        yield "fc_2", self.fc


def _check(ok: bool, index: int, layer: Layer, what: str) -> None:
    if not ok:
        raise ConfigError(f"dlib layer {index} ({layer.name}) does not match the ResNet: {what}")


def _load_conv(conv: nn.Conv2d, layer: Layer, index: int) -> None:
    stride, padding = conv.stride, conv.padding
    assert isinstance(padding, tuple)
    expected = (conv.out_channels, *conv.kernel_size, *stride, *padding)
    _check(layer.ints == expected, index, layer, f"hyper-parameters {layer.ints} != {expected}")
    weight, bias = layer.arrays["weight"], layer.arrays["bias"]
    _check(tuple(weight.shape) == tuple(conv.weight.shape), index, layer, "filter shape")
    assert conv.bias is not None
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(weight))
        conv.bias.copy_(torch.from_numpy(bias))


def _load_affine(affine: Affine, layer: Layer, index: int) -> None:
    _check(layer.ints == (0,), index, layer, "affine layer is not in conv mode")
    gamma, beta = layer.arrays["gamma"], layer.arrays["beta"]
    _check(gamma.shape == tuple(affine.gamma.shape), index, layer, "gamma shape")
    with torch.no_grad():
        affine.gamma.copy_(torch.from_numpy(gamma))
        affine.beta.copy_(torch.from_numpy(beta))


def _load_fc(fc: nn.Linear, layer: Layer, index: int) -> None:
    expected = (fc.out_features, fc.in_features, 1)  # bias mode 1 = FC_NO_BIAS
    _check(layer.ints == expected, index, layer, f"{layer.ints} != {expected}")
    with torch.no_grad():
        fc.weight.copy_(torch.from_numpy(layer.arrays["weight"]).T)


def _check_pool(layer: Layer, index: int) -> None:
    if layer.name == "max_pool_2":
        _check(layer.ints == (3, 3, 2, 2, 0, 0), index, layer, f"pool {layer.ints}")
    elif layer.ints[:2] == (0, 0):  # avg_pool_everything
        _check(layer.ints == (0, 0, 1, 1, 0, 0), index, layer, f"pool {layer.ints}")
    else:
        _check(layer.ints == (2, 2, 2, 2, 0, 0), index, layer, f"pool {layer.ints}")


def load_weights(model: DlibFaceResNet, network: Network) -> None:
    """Copy a parsed dlib network into ``model`` after checking it layer by layer."""
    expected = list(model.dlib_layers())
    if len(expected) != len(network.layers):
        raise ConfigError(
            f"dlib network has {len(network.layers)} layers, the ResNet expects {len(expected)}"
        )
    for index, ((name, module), layer) in enumerate(zip(expected, network.layers, strict=True)):
        _check(layer.name == name, index, layer, f"expected {name}")
        if isinstance(module, nn.Conv2d):
            _load_conv(module, layer, index)
        elif isinstance(module, Affine):
            _load_affine(module, layer, index)
        elif isinstance(module, nn.Linear):
            _load_fc(module, layer, index)
        elif name.endswith("pool_2"):
            _check_pool(layer, index)
        elif name == "input_rgb_image_sized":
            _check(layer.ints == (CHIP_SIZE, CHIP_SIZE), index, layer, "input size")
            with torch.no_grad():
                model.mean.copy_(torch.tensor(layer.reals, dtype=torch.float32).view(1, 3, 1, 1))


def load_dlib_resnet(path: Path | str | None = None) -> DlibFaceResNet:
    """The ResNet with the weights of ``dlib_face_recognition_resnet_model_v1.dat``, eval mode."""
    network = read_network(path if path is not None else model_file(RESNET_FILE))
    if network.loss.name != "loss_metric_2":
        raise ConfigError(f"expected a metric-learning network, found {network.loss.name}")
    model = DlibFaceResNet()
    load_weights(model, network)
    return model.eval()
