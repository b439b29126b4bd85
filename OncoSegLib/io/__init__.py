"""Reading and writing images with their geometry (see :mod:`OncoSegLib.io.volume` for the frames)."""

from OncoSegLib.io.volume import Volume

__all__ = ["Volume"]
