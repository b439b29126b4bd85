"""Pure-Python helpers behind the OncoSeg 3D Slicer module (``OncoSeg/OncoSeg.py``).

Everything the module decides (prompt and geometry conversion, parameter serialisation, the worker thread, the
dependency plan, the merge policy, the orchestration of a segmentation job) lives here so that pytest reaches it
without Slicer. Nothing in this package imports slicer, qt, ctk or vtk: the module passes plain numbers and numpy
arrays (4x4 matrices, point lists, voxel arrays) in and applies the returned plans to MRML itself.

Modules:
- ``geometry``: world (RAS) <-> volume IJK with parent transforms, ROI boxes, slice-view axis, changed regions,
  ``NodeGrid`` (a node's grid for the prompt parser).
- ``prompts``: markups -> the project's one prompt model (``OncoSegLib.prompts.ObjectPrompts``), preview points out.
- ``params``: module settings and their string form, prompt nodes, keyboard shortcuts, next segment, CPU-mode advice.
- ``engine``: the shared core, worker and undo stack of all Logic instances (shut down on module cleanup).
- ``jobs``: a model job's Request (prepared on the main thread) and its worker-thread body.
- ``exports``: label map -> RTSTRUCT / DICOM SEG on the original series grid, or NIfTI.
- ``selftest``: the model part of the module's in-Slicer self-test (fails without torch or on an empty mask).
- ``worker``: one long-lived worker thread with a job queue, results drained on the main thread.
- ``dependencies``: which packages to install, the pip command and its runner (progress, Cancel), never touching
  Slicer's own packages.
- ``merge``: writing a new mask into a segment under an overwrite policy, with undo records.
- ``core``: the engine-facing orchestration the module's Logic delegates to (session, measurements, export).
- ``dicom_tags``: patient/study/series tags for SlicerRT's exporter, as Slicer's DICOM export dialog sets them.
- ``api_check``: lists the Slicer/Qt/CTK/VTK names, signal connections and calls a module file uses (API tests).
"""
