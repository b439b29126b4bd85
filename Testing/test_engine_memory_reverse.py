"""Backward memory propagation (towards lower slice indices) through the session must equal transformers' own
reverse video propagation: ``Sam3TrackerVideoModel.propagate_in_video_iterator(..., reverse=True)`` over the whole
video held in memory (oracle), on a tiny random-weight model. The memory frames a reverse step reads are the ones
AFTER it in slice order; running the backward chain as if it went forward reads the wrong memory and must fail here.
"""

import numpy as np
import pytest
import torch

from OncoSegLib.models.predictor import Sam3Predictor
from OncoSegLib.preprocessing import resize_mask_logits
from OncoSegLib.session import SegmentationSession
from engine_support import ct_volume, ellipsoid, tiny

N, H, W = 16, 28, 36
ANCHOR = 12


def _stock_reverse(bundle, frames: torch.Tensor, anchor_mask: np.ndarray) -> dict[int, tuple[np.ndarray, float]]:
    """(mask, presence) per frame before the anchor from transformers' reverse propagation of the full video."""
    from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import Sam3TrackerVideoInferenceSession

    video = bundle.video
    ref = Sam3TrackerVideoInferenceSession(video=frames, video_height=H, video_width=W, dtype=torch.float32)
    m = torch.nn.functional.interpolate(torch.as_tensor(anchor_mask, dtype=torch.float32)[None, None],
                                        size=(112, 112), mode="bilinear", align_corners=False, antialias=True)
    ref.add_mask_inputs(ref.obj_id_to_idx(1), ANCHOR, (m >= 0.5).float())
    ref.obj_with_new_inputs = [1]
    out: dict[int, tuple[np.ndarray, float]] = {}
    with torch.inference_mode():
        video(inference_session=ref, frame_idx=ANCHOR)
        for o in video.propagate_in_video_iterator(ref, start_frame_idx=ANCHOR, reverse=True):
            if o.frame_idx >= ANCHOR:
                continue
            logits = resize_mask_logits(o.pred_masks[0:1].float(), (H, W)).reshape(H, W)
            presence = float(torch.sigmoid(o.object_score_logits.reshape(-1)[0]))
            out[o.frame_idx] = ((logits > 0).numpy() if presence >= 0.5 else np.zeros((H, W), bool), presence)
    return out


@pytest.fixture(scope="module")
def case():
    bundle = tiny(1)  # seed 1: the random tracker keeps presence above 0.5 (seed 0 sits at 0.49999: empty masks)
    vol = ct_volume([ellipsoid((N, H, W), (18, 14, 8), (9, 8, 9))], (N, H, W))
    return bundle, vol


def test_backward_memory_propagation_equals_transformers_reverse_propagation(case):
    bundle, vol = case
    s = SegmentationSession(Sam3Predictor(bundle), cache_mb=64)
    s.set_volume(vol, modality="ct")
    amask = np.asarray(vol.array[ANCHOR] > 0)
    o = s.add_object("a")
    s.add_mask(o, amask, index=ANCHOR)
    res = s.propagate(o, direction="backward", method="memory", min_area=0)  # random weights: never stop early
    assert res.processed_by_object[o] == list(range(ANCHOR - 1, -1, -1))
    frames = torch.cat([s.pixels("axial", k) for k in range(N)])
    expect = _stock_reverse(bundle, frames, amask)
    assert sorted(expect) == list(range(ANCHOR))
    got = s.result(o)
    conf = s.slice_confidence(o)
    from OncoSegLib.slicing import SliceRef

    for k in range(ANCHOR):
        mask, presence = expect[k]
        assert np.array_equal(got[k], mask), f"slice {k}"
        assert conf[SliceRef("axial", k)][1] == pytest.approx(presence, abs=1e-4)
    assert not got[ANCHOR + 1:].any()  # backward only
    # the comparison has teeth: the tracker puts something on most slices and the masks differ from slice to slice
    nonempty = [k for k in range(ANCHOR) if expect[k][0].any()]
    assert len(nonempty) >= ANCHOR // 2
    assert len({expect[k][0].tobytes() for k in nonempty}) > 1
