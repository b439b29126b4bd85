"""The Slicer module's engine orchestration (OncoSegCore) with the real OncoSegLib session and a tiny model,
plus the export helpers (grid alignment, series folder) and the markups -> prompts assembly."""

import threading

import numpy as np
import pytest

from OncoSegLib.cancel import CancelToken
from OncoSegLib.errors import InputError
from OncoSegLib.io.volume import Volume
from OncoSegLib.slicer_support import core as C
from OncoSegLib.slicer_support import geometry as g
from OncoSegLib.prompts import BoxPrompt, ObjectPrompts, PointPrompt
from OncoSegLib.slicer_support.prompts import prompts_from_markups
from OncoSegLib.slicer_support.worker import ModelWorker


@pytest.fixture(scope="module")
def bundle():
    from OncoSegLib.models.tiny import tiny_bundle

    return tiny_bundle(seed=0)


@pytest.fixture(scope="module")
def ct():
    from OncoSegLib.phantoms import make_ct_phantom

    return make_ct_phantom(seed=1, shape_kji=(6, 40, 48)).volume


class SpySession:
    """Wraps the real session and records which engine calls the core makes."""

    def __init__(self, bundle, cache_mb):
        from OncoSegLib.session import SegmentationSession

        self.real = SegmentationSession(bundle, cache_mb=cache_mb)
        self.calls = []
        self.threads = set()

    def __getattr__(self, name):
        attr = getattr(self.real, name)
        if not callable(attr):
            return attr

        def wrapped(*a, **k):
            self.calls.append(name)
            self.threads.add(threading.get_ident())
            return attr(*a, **k)

        return wrapped


def test_core_equals_direct_engine_calls_and_is_incremental(bundle, ct):
    from OncoSegLib.session import SegmentationSession

    spies = []
    core = C.OncoSegCore(session_factory=lambda b, mb: spies.append(SpySession(b, mb)) or spies[-1])
    core.use_bundle(bundle, "tiny")
    assert core.set_volume(ct, "node1:1", "ct") is True
    assert core.set_volume(ct, "node1:1", "ct") is False  # same fingerprint: session (and its cache) kept
    p1 = ObjectPrompts("lesion", points=[PointPrompt((24, 20, 3), True, "axial")],
                       boxes=[BoxPrompt((14, 10, 3), (34, 30, 3), "axial")])
    r1 = core.apply_prompts(p1)
    # oracle: the engine driven directly with the same prompts, in the same order
    direct = SegmentationSession(bundle)
    direct.set_volume(ct, modality="ct")
    oid = direct.add_object("lesion")
    direct.add_box(oid, (14, 10, 3), (34, 30, 3), axis="axial")
    direct.add_point(oid, (24, 20, 3), positive=True, axis="axial")
    assert r1.mask.shape == ct.shape_kji and r1.mask.dtype == bool
    assert np.array_equal(r1.mask, direct.result(oid))
    assert r1.volume_ml == pytest.approx(r1.mask.sum() * np.prod(ct.spacing) / 1000.0)

    spy = spies[-1]
    spy.calls.clear()
    p2 = ObjectPrompts.from_dict(p1.to_dict())
    p2.points.append(PointPrompt((30, 25, 3), False, "axial"))
    r2 = core.apply_prompts(p2)
    assert spy.calls.count("add_point") == 1 and "add_box" not in spy.calls and "add_object" not in spy.calls
    direct.add_point(oid, (30, 25, 3), positive=False, axis="axial")
    assert np.array_equal(r2.mask, direct.result(oid))

    spy.calls.clear()
    p3 = ObjectPrompts("lesion", points=[PointPrompt((30, 25, 3), False, "axial")],
                       boxes=[BoxPrompt((14, 10, 3), (34, 30, 3), "axial")])  # first point removed: rebuild
    core.apply_prompts(p3)
    assert spy.calls[:2] == ["remove_object", "add_object"] and "add_box" in spy.calls
    core.forget("lesion")
    spy.calls.clear()
    core.apply_prompts(p3)
    assert "remove_object" in spy.calls  # after Clear/undo the object is rebuilt from its prompts

    with pytest.raises(InputError, match="outside"):
        core.apply_prompts(ObjectPrompts("x", points=[PointPrompt((48, 0, 0))]))
    core.set_volume(ct, "node1:2", "ct")  # volume modified: new session
    assert len(spies) == 2


def test_core_on_the_worker_thread_with_propagation_cancel_and_text(bundle, ct):
    spies = []
    core = C.OncoSegCore(session_factory=lambda b, mb: spies.append(SpySession(b, mb)) or spies[-1])
    core.use_bundle(bundle, "tiny")
    worker = ModelWorker()
    try:
        def first(cancel, progress):
            core.set_volume(ct, "k", "ct")
            return core.apply_prompts(ObjectPrompts("organ", points=[PointPrompt((20, 20, 2))]))

        r = worker.run_sync(first)
        assert spies[0].threads == {worker.thread_ident}  # all model work on the worker thread
        seen = []
        token = CancelToken()
        token.cancel()
        before = r.mask.copy()
        r2 = worker.run_sync(lambda c, p: core.propagate("organ", "both", "centroid", progress=lambda *a: seen.append(a),
                                                         cancel=token))
        assert np.array_equal(r2.mask[2], before[2])  # cancelled at once: the prompted slice is kept
        r3 = worker.run_sync(lambda c, p: core.propagate("organ", "forward", "box", progress=lambda *a: seen.append(a)))
        assert r3.mask.shape == ct.shape_kji
        assert np.array_equal(r3.mask[:2], before[:2])  # forward never writes slices below the anchor
        results = worker.run_sync(lambda c, p: core.segment_text("liver", "axial"))
        names = [x.name for x in results]
        assert len(set(names)) == len(names)
        for x in results:
            assert x.mask.shape == ct.shape_kji and x.presence is not None
        assert spies[0].threads == {worker.thread_ident}
    finally:
        worker.shutdown()


def test_measure_against_geometry():
    m = np.zeros((3, 20, 30), bool)
    m[1, 5:9, 10:20] = True  # 10 columns x 4 rows, one slice
    r = C.measure("box", m, (1.0, 2.0, 3.0), {"iou": 0.3, "presence": 0.9}, low_threshold=0.5)
    assert r.volume_ml == pytest.approx(40 * 6.0 / 1000)
    assert r.recist_long_mm == pytest.approx(np.hypot(10 * 1.0, 4 * 2.0), rel=1e-6)  # pixel-corner diagonal
    assert r.low is True and r.iou == 0.3
    assert C.measure("x", m, (1, 1, 1), {"iou": 0.9, "low": True}).low is True  # engine flag wins
    assert r.row()[0] == "box" and r.row()[-1] == "LOW"


def _oblique_volume(shape_kji=(5, 7, 9)):
    d = np.linalg.qr(np.array([[0.9, 0.2, 0.1], [-0.3, 0.8, 0.4], [0.1, -0.5, 0.9]]))[0]
    return Volume(np.arange(np.prod(shape_kji)).reshape(shape_kji), spacing=(0.7, 1.1, 2.5),
                  origin=(10.0, -20.0, 30.0), direction=d)


def test_volume_from_slicer_recovers_lps_geometry():
    v = _oblique_volume()
    got = C.volume_from_slicer(v.array, v.ijk_to_ras, modality="CT")
    np.testing.assert_allclose(got.ijk_to_lps, v.ijk_to_lps, atol=1e-12)
    np.testing.assert_allclose(got.spacing, v.spacing)
    assert got.modality == "CT"


def test_place_on_grid_permuted_and_flipped_grids_against_point_lookup():
    """The one re-indexer (export.labelmap_io.place_on_grid) that the module's RTSTRUCT/SEG export uses."""
    from OncoSegLib.export.labelmap_io import array_index_to_lps, place_on_grid

    src = _oblique_volume((5, 7, 9))
    labels = (np.arange(src.array.size) % 7).reshape(src.shape_kji).astype(np.uint8)
    # destination: same voxels, k reversed and i/j swapped (as a series sorted the other way might be)
    si, sj, sk = src.spacing
    d = src.direction
    n_i, n_j, n_k = src.shape_ijk
    dst_dir = np.column_stack([d[:, 1], d[:, 0], -d[:, 2]])
    origin = src.ijk_to_lps_points([[0, 0, n_k - 1]])[0]
    dst = Volume(np.zeros((n_k, n_i, n_j)), spacing=(sj, si, sk), origin=tuple(origin), direction=dst_dir)
    got = place_on_grid(labels, array_index_to_lps(src), dst)
    # oracle: every destination voxel centre looked up in the source grid
    exp = np.zeros(dst.shape_kji, labels.dtype)
    for k, j, i in np.ndindex(dst.shape_kji):
        s = np.round(src.lps_to_ijk_points(dst.ijk_to_lps_points([[i, j, k]]))[0]).astype(int)
        exp[k, j, i] = labels[s[2], s[1], s[0]]
    assert np.array_equal(got, exp)
    assert np.array_equal(place_on_grid(labels, array_index_to_lps(src), src), labels)
    shifted = src.with_array(src.array, origin=tuple(np.asarray(src.origin) + 0.5 * d[:, 0] * si))
    with pytest.raises(InputError, match="grid"):
        place_on_grid(labels, array_index_to_lps(src), shifted)
    finer = src.with_array(np.zeros((5, 7, 18)), spacing=(si / 2, sj, sk))
    with pytest.raises(InputError):
        place_on_grid(labels, array_index_to_lps(src), finer)


def test_series_folder_from_files(tmp_path):
    files = []
    for n in range(3):
        f = tmp_path / "db" / f"{n}.dcm"
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(bytes([n]) * 10)
        files.append(str(f))
    folder = C.series_folder_from_files(files, tmp_path)
    got = sorted(p.read_bytes() for p in folder.iterdir())
    assert got == [bytes([n]) * 10 for n in range(3)]
    assert (tmp_path / "db" / "0.dcm").read_bytes() == bytes([0]) * 10  # originals untouched
    with pytest.raises(InputError, match="missing"):
        C.series_folder_from_files(files + [str(tmp_path / "nope.dcm")])
    with pytest.raises(InputError, match="no DICOM files"):
        C.series_folder_from_files([])


def test_prompts_from_markups_oblique_with_transform():
    v = _oblique_volume((6, 20, 30))
    ras_to_ijk = v.ras_to_ijk
    parent = np.eye(4)
    parent[:3, 3] = [3.0, -4.0, 5.0]
    to_world = lambda ijk: g.transform_points(g.ijk_to_world_matrix(ras_to_ijk, parent), np.asarray(ijk, float))
    pos = to_world([[4, 5, 2], [10.2, 11.8, 2.1]])
    neg = to_world([[20, 3, 4]])
    corners_ijk = np.array([[x, y, z] for x in (2, 8) for y in (3, 9) for z in (1.9, 2.1)], float)
    scrib = to_world([[1, 1, 3], [6, 4, 3]])
    ps = prompts_from_markups("t", ras_to_ijk, v.shape_ijk, parent, pos, ["", "coronal"], neg, None,
                              to_world(corners_ijk), scrib, None, "", "axial")
    assert [p.ijk for p in ps.points] == [(4, 5, 2), (10, 12, 2), (20, 3, 4)]
    assert [p.axis for p in ps.points] == ["axial", "coronal", "axial"]
    assert [p.positive for p in ps.points] == [True, True, False]
    assert ps.boxes[0].ijk_min == (2, 3, 2) and ps.boxes[0].ijk_max == (8, 9, 2) and ps.boxes[0].axis == "axial"
    sc = ps.scribbles[0]
    assert sc.axis == "axial" and sc.points_ijk[0] == (1, 1, 3) and sc.points_ijk[-1] == (6, 4, 3)
    ps.validate(v.shape_ijk)
    with pytest.raises(InputError, match="outside"):
        prompts_from_markups("t", ras_to_ijk, v.shape_ijk, parent, to_world([[40, 0, 0]]))


def test_auto_method_runs_the_models_default_and_never_memory_without_a_tracker(ct):
    """The panel's default propagation method is "auto": a tracker-less model (LiteMedSAM, the CPU fallback; here
    the tiny tracker-only bundle) gets its own default (box3d), never SAM3 memory, which it cannot run."""
    from OncoSegLib.models.tiny import tiny_bundle
    from OncoSegLib.slicer_support.params import ModuleSettings

    assert ModuleSettings().propagateMethod == "auto"
    core = C.OncoSegCore()
    core.use_bundle(tiny_bundle(seed=0, text=False, video=False), "tiny-tracker-only")
    core.set_volume(ct, "node1:1", "ct")
    core.apply_prompts(ObjectPrompts("organ", boxes=[BoxPrompt((14, 10, 1), (34, 30, 4), "axial")]))
    session = core._require()
    assert not getattr(session.predictor, "has_video", False)
    core.propagate("organ", "both", "auto")
    lp = session._objects[session.object_id("organ")].last_propagation
    assert lp["method"] == session.default_method == "box3d"
