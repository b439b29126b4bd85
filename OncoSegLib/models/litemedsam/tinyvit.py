"""TinyViT-5M image encoder of LiteMedSAM (256 x 256 input -> 256 x 64 x 64 embedding), written for OncoSeg.

Architecture (the variant the MedSAM authors distilled for LiteMedSAM, as checkpointed in ``lite_medsam.pth``):

==========  ===========  ========  ==========================================================  ==============
stage       resolution   channels  blocks                                                      then
==========  ===========  ========  ==========================================================  ==============
patch_embed 256 x 256    3 -> 64   two 1x1 Conv+BN with GELU between (no stride)               --
layers.0    256 x 256    64        2 MBConv (1x1 expand x4, 3x3 depthwise, 1x1 project)        merge -> 128 @ 128
layers.1    128 x 128    128       2 TinyViT blocks, 4 heads, window 7                         merge -> 160 @ 64
layers.2    64 x 64      160       6 TinyViT blocks, 5 heads, window 14                        merge -> 320 @ 64
layers.3    64 x 64      320       2 TinyViT blocks, 10 heads, window 7                        --
neck        64 x 64      256       1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d (no biases)    --
==========  ===========  ========  ==========================================================  ==============

A TinyViT block is: windowed attention (pre-norm, zero-padded windows, learned relative-position bias indexed by
``(|dy|, |dx|)``) + residual; 3x3 depthwise Conv+BN ("local conv"); MLP (pre-norm, GELU) + residual. The module
and parameter names are the checkpoint's, so ``load_state_dict(strict=True)`` accounts for every tensor. The
attention runs through ``torch.nn.functional.scaled_dot_product_attention`` with the position bias as an additive
mask (same maths as the eager softmax, fused kernel). Frames: tensors are (B, C, H, W) or token sequences
(B, H * W, C) in row-major (y, x) order; nothing here knows about patients or voxels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TinyViTConfig:
    """Hyper-parameters of the LiteMedSAM TinyViT (defaults = the shipped checkpoint)."""

    image_size: int = 256
    in_channels: int = 3
    dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    heads: tuple[int, ...] = (2, 4, 5, 10)
    windows: tuple[int, ...] = (7, 7, 14, 7)
    mlp_ratio: float = 4.0
    mbconv_expand: float = 4.0
    out_channels: int = 256
    embedding_size: int = 64


class ConvBN(nn.Sequential):
    """Conv2d without bias followed by BatchNorm2d (children named ``c`` and ``bn`` as in the checkpoint)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1):
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) tensor (eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class PatchEmbed(nn.Module):
    """(B, 3, S, S) -> (B, dim, S, S): Conv1x1+BN, GELU, Conv1x1+BN (keys ``seq.0`` and ``seq.2``)."""

    def __init__(self, cin: int, dim: int):
        super().__init__()
        self.seq = nn.Sequential(ConvBN(cin, dim // 2), nn.GELU(), ConvBN(dim // 2, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block on (B, C, H, W): expand 1x1, depthwise 3x3, project 1x1, residual, GELU."""

    def __init__(self, dim: int, expand: float):
        super().__init__()
        hidden = int(dim * expand)
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, groups=hidden)
        self.conv3 = ConvBN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.conv1(x))
        y = F.gelu(self.conv2(y))
        return F.gelu(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """Tokens (B, H*W, C) or maps (B, C, H, W) -> tokens (B, H'*W', out): 1x1, depthwise 3x3 (stride 2, or 1 for the
    last stage), 1x1; GELU after the first two."""

    def __init__(self, resolution: int, dim: int, out_dim: int, stride: int):
        super().__init__()
        self.resolution = resolution
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride=stride, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            b, _, c = x.shape
            x = x.transpose(1, 2).reshape(b, c, self.resolution, self.resolution)
        x = F.gelu(self.conv1(x))
        x = F.gelu(self.conv2(x))
        return self.conv3(x).flatten(2).transpose(1, 2)


def relative_offset_index(window: int) -> torch.Tensor:
    """(N, N) index, N = window², of the bias shared by token pairs with the same (|dy|, |dx|): ``|dy|*window+|dx|``.

    This is the order in which the offsets first occur when enumerating pairs from token (0, 0), i.e. the column
    order of the checkpoint's ``attention_biases`` (heads, window²).
    """
    yy, xx = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    y, x = yy.reshape(-1), xx.reshape(-1)
    return (y[:, None] - y[None, :]).abs() * window + (x[:, None] - x[None, :]).abs()


class WindowAttention(nn.Module):
    """Multi-head attention inside one window of tokens (B', N, C), N = window², with a learned position bias.

    ``qkv`` packs, per head, [q (d), k (d), v (d)] with d = C / heads (the checkpoint layout).
    """

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(heads, window * window))
        self.register_buffer("bias_index", relative_offset_index(window), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.heads, 3, self.head_dim).permute(3, 0, 2, 1, 4)
        bias = self.attention_biases[:, self.bias_index].to(qkv.dtype)  # (heads, N, N)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=bias)
        return self.proj(y.transpose(1, 2).reshape(b, n, -1))


class Mlp(nn.Module):
    """Pre-norm MLP: LayerNorm, Linear, GELU, Linear."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Window attention + local depthwise conv + MLP on tokens (B, R*R, C) of an R x R map."""

    def __init__(self, dim: int, resolution: int, heads: int, window: int, mlp_ratio: float):
        super().__init__()
        self.resolution = resolution
        self.window = window
        self.attn = WindowAttention(dim, heads, window)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = ConvBN(dim, dim, 3, groups=dim)

    def _windows(self, x: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        r, w = self.resolution, self.window
        if r == w:
            return self.attn(x)
        pad = (w - r % w) % w
        g = x.view(b, r, r, c)
        if pad:
            g = F.pad(g, (0, 0, 0, pad, 0, pad))  # zero tokens at the bottom/right take part as keys
        n = (r + pad) // w
        g = g.view(b, n, w, n, w, c).transpose(2, 3).reshape(b * n * n, w * w, c)
        g = self.attn(g).view(b, n, n, w, w, c).transpose(2, 3).reshape(b, r + pad, r + pad, c)
        return g[:, :r, :r].reshape(b, r * r, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, l, c = x.shape
        r = self.resolution
        x = x + self._windows(x)
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, r, r)).view(b, c, l).transpose(1, 2)
        return x + self.mlp(x)


class Stage(nn.Module):
    """``blocks`` (MBConv for stage 0, TinyViT blocks after) then an optional ``downsample`` (PatchMerging)."""

    def __init__(self, blocks: list[nn.Module], downsample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class TinyViT(nn.Module):
    """LiteMedSAM image encoder: (B, 3, 256, 256) in [0, 1] -> (B, 256, 64, 64) embedding (see module table)."""

    def __init__(self, cfg: TinyViTConfig = TinyViTConfig()):
        super().__init__()
        self.cfg = cfg
        d = cfg.dims
        self.patch_embed = PatchEmbed(cfg.in_channels, d[0])
        res = [cfg.image_size, cfg.image_size // 2, cfg.image_size // 4, cfg.image_size // 4]
        layers: list[nn.Module] = []
        for i, depth in enumerate(cfg.depths):
            if i == 0:
                blocks: list[nn.Module] = [MBConv(d[0], cfg.mbconv_expand) for _ in range(depth)]
            else:
                blocks = [TinyViTBlock(d[i], res[i], cfg.heads[i], cfg.windows[i], cfg.mlp_ratio)
                          for _ in range(depth)]
            down = None
            if i < len(cfg.depths) - 1:
                stride = 2 if res[i + 1] < res[i] else 1
                down = PatchMerging(res[i], d[i], d[i + 1], stride)
            layers.append(Stage(blocks, down))
        self.layers = nn.ModuleList(layers)
        self.neck = nn.Sequential(nn.Conv2d(d[-1], cfg.out_channels, 1, bias=False), LayerNorm2d(cfg.out_channels),
                                  nn.Conv2d(cfg.out_channels, cfg.out_channels, 3, padding=1, bias=False),
                                  LayerNorm2d(cfg.out_channels))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.layers[0](self.patch_embed(pixels))
        for layer in self.layers[1:]:
            x = layer(x)
        b, _, c = x.shape
        g = self.cfg.embedding_size
        return self.neck(x.transpose(1, 2).reshape(b, c, g, g))
