"""MRML-side helpers of the OncoSeg Slicer module (module code: they may use slicer, vtk and qt).

Each file has one job; OncoSeg.py stays the glue that wires them to the panel and the console API. Decisions (what
to write, how to merge, which prompts) live in ``OncoSegLib.slicer_support``; these helpers only move data between
MRML nodes and numpy:

- ``volumes``: geometry, voxels and the session key of a volume node;
- ``mrml_segments``: segment read/write on the volume's IJK grid, the output segmentation node;
- ``markups``: prompt markups nodes -> ObjectPrompts (IJK), the slice axis under the cursor;
- ``exports``: label map of a segmentation, the original DICOM series, SlicerRT's exporter;
- ``panels``: widget glue for dependency install and the measurements table.
"""
