"""The model part of the module's in-Slicer self-test (``OncoSegTest.test_segmentAndExport``), free of Slicer.

It drives an ``OncoSegLogic`` (passed in) exactly as a user's console script would: the shipped demo model segments a
phantom vertebra from one click into a segmentation node, Undo empties it, and an RTSTRUCT written by the module is
read back. It FAILS, never skips, when PyTorch/transformers are missing, the mask is empty, or the vertebra's Dice on
the clicked slice is below 0.8 (0.99 measured with the demo model). pytest runs it through the real-MRML harness
(``Testing/test_slicer_mrml.py``); Slicer runs it from the module's Test.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Callable

import numpy as np

MIN_DICE = 0.8


def vertebra_case() -> tuple[Any, np.ndarray, list[int], np.ndarray]:
    """(phantom Volume, vertebra truth (K, J, I) bool, click [i, j, k] inside it, IJKToRAS 4x4 for Slicer)."""
    from OncoSegLib.demo import DEMO_SPACING
    from OncoSegLib.phantoms import make_ct_phantom

    phantom = make_ct_phantom(seed=5, shape_kji=(12, 128, 128), spacing=DEMO_SPACING)
    truth = phantom.labels == 4  # label 4: vertebra
    k = truth.shape[0] // 2
    jj, ii = np.nonzero(truth[k])
    ijk_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ phantom.volume.ijk_to_lps
    return phantom.volume, truth, [int(np.median(ii)), int(np.median(jj)), k], ijk_to_ras


def segment_and_export(test: Any, logic: Any, add_volume: Callable[[np.ndarray, np.ndarray], Any],
                       temporary_path: str) -> None:
    """Run the check with ``test`` (a unittest.TestCase), ``logic`` (OncoSegLogic) and ``add_volume(array,
    ijk_to_ras)`` -> volume node."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        test.fail(f"OncoSeg needs PyTorch and transformers ({e}): press 'Install' in the OncoSeg module")
    from OncoSegLib.demo import DEMO_MODEL_DIR
    from OncoSegLib.export.rtstruct import read_rtstruct
    from OncoSegLib.io.dicom_write import write_dicom_series

    volume, truth, click, ijk_to_ras = vertebra_case()
    node = add_volume(volume.array.astype(np.int16), ijk_to_ras)
    run = dict(modality="ct", model=str(DEMO_MODEL_DIR), name="vertebra", device="cpu")
    segmentation = logic.segment(node, {"points": [click]}, **run)
    segment_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName("vertebra")
    mask = logic._segmentArray(segmentation, segment_id, node)
    written = int(mask.sum())
    test.assertGreater(written, 0, "the model returned an empty mask")
    test.assertEqual(written, int(logic.core.session.result(logic.core.object_id("vertebra")).sum()))
    k = click[2]
    dice = 2.0 * float((mask[k] & truth[k]).sum()) / float(mask[k].sum() + truth[k].sum())
    test.assertGreater(dice, MIN_DICE, f"vertebra Dice {dice:.3f} on the clicked slice")
    logic.undoLastEdit()
    test.assertEqual(int(logic._segmentArray(segmentation, segment_id, node).sum()), 0, "Undo left voxels")
    logic.segment(node, {"points": [click]}, segmentationNode=segmentation, **run)
    out = tempfile.mkdtemp(prefix="OncoSegTest-", dir=temporary_path)
    series = os.path.join(out, "ct")
    write_dicom_series(volume, series)
    (path,) = logic.exportRTStruct(segmentation, node, out, seriesFolder=series, useSlicerRT=False)
    labels, _rois = read_rtstruct(path, series)
    test.assertEqual(int((labels > 0).sum()), written, "the RTSTRUCT read back differs from the segment")
