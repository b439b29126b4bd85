"""Pure-Python helpers behind the OncoSeg 3D Slicer module (``OncoSeg/OncoSeg.py``).

Everything the module decides (prompt and geometry conversion, parameter serialisation, the worker thread, the
dependency plan, the merge policy, the orchestration of a segmentation job) lives here so that pytest reaches it
without Slicer. Nothing in this package imports slicer, qt, ctk or vtk: the module passes plain numbers and numpy
arrays (4x4 matrices, point lists, voxel arrays) in and applies the returned plans to MRML itself.

Modules:
- ``geometry``: world (RAS) <-> volume IJK with parent transforms, ROI boxes, slice-view axis, changed regions.
- ``prompts``: prompt dataclasses in IJK and their JSON form (stored in the parameter node).
- ``params``: module settings (modality, model, propagation, overwrite policy) and their string form.
- ``worker``: one long-lived worker thread with a job queue, results drained on the main thread.
- ``dependencies``: which packages to install and the exact pip arguments (never touching Slicer's own).
- ``merge``: writing a new mask into a segment under an overwrite policy, with undo records.
- ``core``: the engine-facing orchestration the module's Logic delegates to (session, measurements, export).
- ``dicom_tags``: patient/study/series tags for SlicerRT's exporter, as Slicer's DICOM export dialog sets them.
- ``api_check``: lists the Slicer/Qt/CTK/VTK names, signal connections and calls a module file uses (API tests).
"""
