"""Model-input resizing against independent oracles.

- Slices -> model input: PIL ``Image.resize(BILINEAR)`` on float ("F") images — the resampling of Meta's SAM3
  processor (PIL bilinear, antialiased when shrinking) and of transformers' ``Sam3ImageProcessor`` (torchvision
  ``resize(BILINEAR, antialias=True)``, built to match PIL). torchvision cannot be installed here, so PIL is the oracle.
- Mask logits -> slice size: scipy.ndimage.zoom (order=1, grid_mode=True = half-pixel bilinear, no antialias), as the
  stock post-processing (``interpolate(bilinear, align_corners=False)``).
"""

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from OncoSegLib.errors import InputError
from OncoSegLib.preprocessing import resize_bilinear, resize_mask_logits, to_model_batch, to_model_input


def zoom_oracle(x: np.ndarray, out_hw, channel_last=True) -> np.ndarray:
    h, w = x.shape[:2] if channel_last else x.shape[-2:]
    if channel_last:
        f = (out_hw[0] / h, out_hw[1] / w) + (1,) * (x.ndim - 2)
    else:
        f = (1,) * (x.ndim - 2) + (out_hw[0] / h, out_hw[1] / w)
    return ndimage.zoom(x.astype(np.float64), f, order=1, grid_mode=True, mode="nearest")


def pil_oracle(x: np.ndarray, out_hw) -> np.ndarray:
    """PIL bilinear resize of a float (H, W) or (H, W, C) image, channel by channel ("F" mode: no 8-bit rounding)."""
    chans = [x] if x.ndim == 2 else [x[..., c] for c in range(x.shape[-1])]
    out = [np.asarray(Image.fromarray(np.ascontiguousarray(c, dtype=np.float32), mode="F")
                      .resize((int(out_hw[1]), int(out_hw[0])), Image.BILINEAR), dtype=np.float64) for c in chans]
    return out[0] if x.ndim == 2 else np.stack(out, axis=-1)


@pytest.mark.parametrize("out_hw", [(16, 16), (3, 4), (7, 23), (5, 5), (1, 1)])
def test_resize_bilinear_matches_pil(out_hw):
    x = np.random.default_rng(0).random((7, 10, 3)).astype(np.float32)
    y = resize_bilinear(x, out_hw)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == out_hw + (3,)
    np.testing.assert_allclose(y, pil_oracle(x, out_hw), atol=1e-5)


def test_resize_bilinear_grey_and_torch():
    x = np.random.default_rng(1).random((6, 9)).astype(np.float32)
    y = resize_bilinear(torch.from_numpy(x), (12, 5))
    assert isinstance(y, torch.Tensor) and tuple(y.shape) == (12, 5)
    np.testing.assert_allclose(y.numpy(), pil_oracle(x, (12, 5)), atol=1e-5)
    up = resize_bilinear(x, (12, 18))  # enlarging only: plain half-pixel bilinear
    np.testing.assert_allclose(up, zoom_oracle(x, (12, 18)), atol=1e-6)


@pytest.mark.parametrize("hw, s", [((512, 512), 112), ((300, 260), 112), ((300, 60), 112), ((1024, 900), 1008)])
def test_slice_larger_than_the_model_input_is_antialiased_as_the_sam3_processor(hw, s):
    """A CT slice (512 x 512) shrunk to the model input: what PIL bilinear gives (max difference ~1e-5 measured);
    plain bilinear sampling differs by up to ~0.5 on noise."""
    x = np.random.default_rng(5).random(hw + (3,)).astype(np.float32)
    t = to_model_input(x, s)
    np.testing.assert_allclose(t.permute(1, 2, 0).numpy(), (pil_oracle(x, (s, s)) - 0.5) / 0.5, atol=3e-4)


def test_shrinking_does_not_alias_fine_stripes():
    """One-pixel stripes (0, 1, 0, 1 ...) of a 512-wide slice shrunk to 112 are grey (0.5) once low-pass filtered
    (measured: at most 0.012 off inside the border columns); sampling without antialiasing keeps stripes of nearly
    0s and 1s (0.43 off, measured)."""
    x = np.zeros((512, 512, 3), np.float32)
    x[:, 1::2] = 1.0
    t = to_model_input(x, 112)  # (x - 0.5) / 0.5: grey 0.5 -> 0
    assert float(t[..., 1:-1].abs().max()) < 0.05
    assert float(resize_bilinear(x, (112, 112))[:, 1:-1].std()) < 0.03


def test_to_model_input_values():
    assert torch.equal(to_model_input(np.full((5, 7, 3), 0.5, np.float32), 8), torch.zeros(3, 8, 8))
    assert torch.equal(to_model_input(np.ones((5, 7, 3), np.float32), 8), torch.ones(3, 8, 8))
    assert torch.equal(to_model_input(np.zeros((5, 7, 3), np.float32), 8), -torch.ones(3, 8, 8))
    x = np.random.default_rng(2).random((9, 13, 3)).astype(np.float32)
    t = to_model_input(x, 16)
    assert t.dtype == torch.float32 and tuple(t.shape) == (3, 16, 16)
    expected = (pil_oracle(x, (16, 16)) - 0.5) / 0.5  # enlarging: plain bilinear (scipy agrees)
    np.testing.assert_allclose(t.permute(1, 2, 0).numpy(), expected, atol=2e-5)
    np.testing.assert_allclose(t.permute(1, 2, 0).numpy(), (zoom_oracle(x, (16, 16)) - 0.5) / 0.5, atol=2e-6)
    with pytest.raises(InputError):
        to_model_input(np.zeros((5, 5)), 8)


def test_to_model_batch_list_and_array():
    rng = np.random.default_rng(3)
    a, b = rng.random((9, 13, 3)).astype(np.float32), rng.random((4, 4, 3)).astype(np.float32)
    batch = to_model_batch([a, b], 8)
    assert tuple(batch.shape) == (2, 3, 8, 8)
    assert torch.equal(batch[0], to_model_input(a, 8)) and torch.equal(batch[1], to_model_input(b, 8))
    arr = rng.random((3, 6, 5, 3)).astype(np.float32)
    batch2 = to_model_batch(arr, 8)
    for i in range(3):
        torch.testing.assert_close(batch2[i], to_model_input(arr[i], 8), rtol=0, atol=1e-6)


def test_resize_mask_logits_back_to_slice():
    logits = np.random.default_rng(4).normal(size=(2, 1, 8, 8)).astype(np.float32)
    out = resize_mask_logits(logits, (11, 6))
    assert out.shape == (2, 1, 11, 6)
    np.testing.assert_allclose(out, zoom_oracle(logits, (11, 6), channel_last=False), atol=1e-5)
    t = resize_mask_logits(torch.from_numpy(logits[0, 0]), (16, 16))
    assert isinstance(t, torch.Tensor) and tuple(t.shape) == (16, 16)
