"""A faster LiteMedSAM for CPU inference: the strictly loaded eager model, converted (a copy; the original is kept).

What :func:`optimise` changes, all inference-only and all computing the same function up to float rounding:

1. every ``ConvBN`` (Conv2d without bias + BatchNorm2d in eval mode) becomes one Conv2d with the BatchNorm folded
   into its weight and bias (``w' = w * g / sqrt(v + eps)``, ``b' = beta - m * g / sqrt(v + eps)``): one pass over
   the activation instead of two;
2. convolution weights and activations in ``channels_last`` (NHWC) memory format: oneDNN's fast convolution kernels,
   above all for the depthwise 3 x 3 convolutions, which fall back to a slow reference kernel in NCHW;
3. the window attention's relative-position bias is gathered once (it depends on the weights only) and given to
   ``scaled_dot_product_attention`` as a 4-D mask, the form the fused CPU kernel accepts;
4. on CPU, GELU fused into the convolution or linear layer before it (oneDNN post-op through
   ``torch.ops.mkldnn._convolution_pointwise`` / ``_linear_pointwise``, the kernels torch.compile uses on CPU; exact
   erf GELU): one pass over the 256 x 256 x 256 activations of the first stage instead of two. Elsewhere (CUDA,
   autocast, a torch without those ops) the same modules run the unfused ``gelu(conv(x))``;
5. optional bfloat16 (``dtype=torch.bfloat16``): the image encoder's matrix products and convolutions in bf16
   (CPUs with AMX / AVX512-BF16 run them several times faster), LayerNorms, softmax and the output in float32.
   Off by default: the embedding then differs from the fp32 reference by about 1e-2 (see benchmarks/lite.py for
   the measured mask Dice) and masks move by a few boundary pixels; float16 (``dtype=torch.float16``) is about 10x
   closer (~2e-3); the prompt encoder and mask decoder always stay float32.

Tensors keep the model's frames: model input (B, 3, 256, 256) in [0, 1], embedding (B, 256, 64, 64) float32.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from OncoSegLib.models.litemedsam import tinyvit as tv
from OncoSegLib.models.litemedsam.model import LiteMedSAM


@dataclass(frozen=True)
class FastOptions:
    """Which conversions :func:`optimise` applies (defaults: all exact-up-to-rounding ones, float32)."""

    fold_batchnorm: bool = True
    channels_last: bool = True
    fused_attention: bool = True
    fused_gelu: bool = True
    dtype: torch.dtype = torch.float32


def fold_conv_bn(block: nn.Sequential) -> nn.Conv2d:
    """A ``ConvBN`` (conv ``c`` without bias, BatchNorm ``bn`` in eval mode) -> one Conv2d computing the same map."""
    conv, bn = block.c, block.bn
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
    return fused.to(conv.weight.device)


def _fold_all(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, tv.ConvBN):
            setattr(module, name, fold_conv_bn(child))
        else:
            _fold_all(child)


class FusedWindowAttention(nn.Module):
    """:class:`tinyvit.WindowAttention` with its position bias gathered once, as a (1, heads, N, N) mask."""

    def __init__(self, attn: tv.WindowAttention):
        super().__init__()
        self.heads, self.head_dim = attn.heads, attn.head_dim
        self.norm, self.qkv, self.proj = attn.norm, attn.qkv, attn.proj
        with torch.no_grad():
            bias = attn.attention_biases[:, attn.bias_index][None].contiguous()
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.heads, 3, self.head_dim).permute(3, 0, 2, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=self.bias.to(qkv.dtype))
        return self.proj(y.transpose(1, 2).reshape(b, n, -1))


def _fuse_attention(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, tv.WindowAttention):
            setattr(module, name, FusedWindowAttention(child))
        else:
            _fuse_attention(child)


def _has_pointwise_ops() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
                    and hasattr(torch.ops.mkldnn, "_linear_pointwise"))
    except (AttributeError, RuntimeError):  # pragma: no cover - torch built without oneDNN
        return False


class ConvGelu(nn.Module):
    """``gelu(conv(x))`` for a (folded) Conv2d with bias; one fused oneDNN call on CPU float32 inputs."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        self.bias = nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        self.stride, self.padding, self.groups = list(conv.stride), list(conv.padding), conv.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cpu and x.dtype == self.weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu"):
            return torch.ops.mkldnn._convolution_pointwise(x, self.weight, self.bias, self.padding, self.stride,
                                                           [1, 1], self.groups, "gelu", [], "none")
        return F.gelu(F.conv2d(x, self.weight, self.bias, self.stride, self.padding, 1, self.groups))


class LinearGelu(nn.Module):
    """``gelu(linear(x))``; one fused oneDNN call on CPU float32 inputs."""

    def __init__(self, lin: nn.Linear):
        super().__init__()
        self.weight = nn.Parameter(lin.weight.detach().clone(), requires_grad=False)
        self.bias = nn.Parameter(lin.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cpu and x.dtype == self.weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu"):
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "gelu", [], "none")
        return F.gelu(F.linear(x, self.weight, self.bias))


class _FusedMBConv(nn.Module):
    """:class:`tinyvit.MBConv` with folded convolutions and GELU fused into the first two."""

    def __init__(self, m: tv.MBConv):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = ConvGelu(m.conv1), ConvGelu(m.conv2), m.conv3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.conv3(self.conv2(self.conv1(x))) + x)


class _FusedPatchMerging(nn.Module):
    """:class:`tinyvit.PatchMerging` with folded convolutions and GELU fused into the first two."""

    def __init__(self, m: tv.PatchMerging):
        super().__init__()
        self.resolution = m.resolution
        self.conv1, self.conv2, self.conv3 = ConvGelu(m.conv1), ConvGelu(m.conv2), m.conv3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            b, _, c = x.shape
            x = x.transpose(1, 2).reshape(b, c, self.resolution, self.resolution)
        return self.conv3(self.conv2(self.conv1(x))).flatten(2).transpose(1, 2)


class _FusedMlp(nn.Module):
    """:class:`tinyvit.Mlp` with GELU fused into ``fc1``."""

    def __init__(self, m: tv.Mlp):
        super().__init__()
        self.norm, self.fc1, self.fc2 = m.norm, LinearGelu(m.fc1), m.fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(self.norm(x)))


def _fuse_gelu(enc: tv.TinyViT) -> None:
    """Replace MBConv / PatchMerging / Mlp by their GELU-fused forms (needs folded BatchNorm: plain Conv2d)."""
    for stage in enc.layers:
        stage.blocks = nn.ModuleList(_FusedMBConv(b) if isinstance(b, tv.MBConv) else b for b in stage.blocks)
        for b in stage.blocks:
            if isinstance(b, tv.TinyViTBlock):
                b.mlp = _FusedMlp(b.mlp)
        if isinstance(stage.downsample, tv.PatchMerging):
            stage.downsample = _FusedPatchMerging(stage.downsample)


class _AutocastEncoder(nn.Module):
    """Runs the wrapped encoder under CPU autocast to ``dtype`` (bfloat16 or float16); returns a float32 embedding.

    Autocast casts the float32 weights on the fly, so a non-finite result (float16 overflow) is recomputed in
    float32 by the same module: never a NaN embedding.
    """

    def __init__(self, encoder: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.encoder = encoder
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=self.dtype):
            y = self.encoder(x).float()
        return y if bool(torch.isfinite(y).all()) else self.encoder(x).float()


class _ChannelsLast(nn.Module):
    """Gives the wrapped encoder its input in channels_last format; returns a contiguous (NCHW) embedding."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.contiguous(memory_format=torch.channels_last)).contiguous()


def optimise(net: LiteMedSAM, options: FastOptions = FastOptions()) -> LiteMedSAM:
    """A converted deep copy of ``net`` (eval mode, inference only); ``net`` itself is left unchanged."""
    fast = copy.deepcopy(net).eval()
    enc: nn.Module = fast.image_encoder
    if options.fold_batchnorm:
        _fold_all(enc)
    if options.fused_attention:
        _fuse_attention(enc)
    if options.fused_gelu and options.fold_batchnorm and _has_pointwise_ops():
        _fuse_gelu(enc)
    if options.channels_last:
        enc = _ChannelsLast(enc.to(memory_format=torch.channels_last))
    if options.dtype in (torch.bfloat16, torch.float16):
        enc = _AutocastEncoder(enc, options.dtype)
    elif options.dtype != torch.float32:
        raise ValueError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, not {options.dtype}")
    fast.image_encoder = enc
    for p in fast.parameters():
        p.requires_grad_(False)
    return fast
