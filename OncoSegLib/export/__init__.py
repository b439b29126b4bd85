"""Clinical export: DICOM RTSTRUCT (own pydicom writer, contours on voxel edges), DICOM SEG (highdicom) and NIfTI
label maps, each exact for any series geometry, plus readers for round trips.

- :mod:`.rtstruct`: ``write_rtstruct``, ``read_rtstruct``, ``read_rtstruct_masks``
- :mod:`.seg`: ``write_seg``, ``read_seg``
- :mod:`.labelmap_io`: ``read_labelmap``/``write_labelmap`` (NIfTI, exact re-indexing onto a series grid)
- :mod:`.contours`: ``trace_slice`` (edge-following polygons) and ``rasterize_slice`` (even-odd/XOR fill)
- :mod:`.reference`: ``load_reference`` (series headers and per-slice geometry, no pixels)
- :mod:`.roi`: ``RoiSpec`` (label, name, colour, RT ROI Interpreted Type)
"""

from OncoSegLib.export.roi import RoiSpec

__all__ = ["RoiSpec", "write_rtstruct", "read_rtstruct", "write_seg", "read_seg"]


def __getattr__(name: str):  # lazy: pydicom/highdicom are imported only when an exporter is used
    if name in ("write_rtstruct", "read_rtstruct"):
        from OncoSegLib.export import rtstruct

        return getattr(rtstruct, name)
    if name in ("write_seg", "read_seg"):
        from OncoSegLib.export import seg

        return getattr(seg, name)
    raise AttributeError(name)
