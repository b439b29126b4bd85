"""OncoSegLib: the pure-Python engine behind the OncoSeg 3D Slicer extension.

Layers, one direction only: ``io`` -> ``preprocessing`` -> ``models`` -> ``session``/``propagation`` ->
``export``; ``cli``, ``training``, ``evaluation`` and the Slicer module sit on top.
This package never imports slicer, qt, ctk or vtk.
"""

from OncoSegLib.errors import OncoSegError

__version__ = "0.1.0"
__all__ = ["OncoSegError", "__version__"]
