"""The one image type of OncoSeg.

Frames used throughout OncoSeg:
- **IJK**: voxel indices. ``i`` runs along image columns, ``j`` along rows, ``k`` along slices. The voxel array is
  stored in **(k, j, i)** order (``array[k, j, i]``), optionally with a trailing channel axis (RGB images).
- **LPS**: DICOM patient coordinates in millimetres (x to the patient's Left, y Posterior, z Superior).
- **RAS**: Slicer/NIfTI world coordinates in millimetres (x Right, y Anterior, z Superior) = diag(-1,-1,1) * LPS.
- **model pixels**: (x, y) pixel coordinates in the square model input of one 2D slice (see ``OncoSegLib.slicing``).

A voxel index is the *centre* of the voxel: ``LPS = origin + direction @ (spacing * ijk)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Volume:
    """A 3D (or single-slice 2D) image with its geometry.

    Attributes:
        array: voxel values, shape (K, J, I) or (K, J, I, C) for multi-channel (RGB) images; (k, j, i) order.
        spacing: (si, sj, sk) voxel size in mm along the i, j, k axes.
        origin: LPS position in mm of the centre of voxel (i, j, k) = (0, 0, 0).
        direction: 3x3 matrix whose *columns* are the unit vectors of the i, j, k axes in LPS.
        modality: DICOM-style modality code when known ("CT", "MR", "PT", "US", "DX", "MG", "ES", "XC", ...).
        metadata: non-pixel facts (SeriesInstanceUID, StudyInstanceUID, FrameOfReferenceUID, per-slice
            SOPInstanceUIDs in k order under "sop_instance_uids", source files under "files", ...).
            Never logged: it may hold patient identifiers.
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    modality: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        if self.array.ndim == 2:
            self.array = self.array[None]
        if self.array.ndim not in (3, 4):
            raise ValueError(f"Volume array must be (K,J,I) or (K,J,I,C); got shape {self.array.shape}")
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
        self.origin = tuple(float(o) for o in self.origin)  # type: ignore[assignment]
        self.direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        if any(s <= 0 for s in self.spacing):
            raise ValueError(f"spacing must be positive, got {self.spacing}")

    # ----- shape -----
    @property
    def shape_kji(self) -> tuple[int, int, int]:
        """Voxel grid size in (K, J, I) order (channels excluded)."""
        return tuple(int(n) for n in self.array.shape[:3])  # type: ignore[return-value]

    @property
    def shape_ijk(self) -> tuple[int, int, int]:
        """Voxel grid size in (I, J, K) order (columns, rows, slices)."""
        k, j, i = self.shape_kji
        return (i, j, k)

    @property
    def channels(self) -> int:
        """Number of channels: 1 for grey images, 3 for RGB."""
        return 1 if self.array.ndim == 3 else int(self.array.shape[3])

    # ----- geometry -----
    @property
    def ijk_to_lps(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous (i, j, k, 1) voxel indices to LPS mm."""
        m = np.eye(4)
        m[:3, :3] = self.direction @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m

    @property
    def lps_to_ijk(self) -> np.ndarray:
        """4x4 inverse of :attr:`ijk_to_lps`: LPS mm -> continuous voxel indices (i, j, k)."""
        return np.linalg.inv(self.ijk_to_lps)

    @property
    def ijk_to_ras(self) -> np.ndarray:
        """4x4 matrix mapping (i, j, k, 1) to RAS mm (Slicer's IJKToRAS, NIfTI's affine for (i,j,k) data)."""
        return LPS_TO_RAS @ self.ijk_to_lps

    @property
    def ras_to_ijk(self) -> np.ndarray:
        """4x4 inverse of :attr:`ijk_to_ras`."""
        return np.linalg.inv(self.ijk_to_ras)

    def ijk_to_lps_points(self, ijk: np.ndarray) -> np.ndarray:
        """Map an (N, 3) array of (i, j, k) indices (may be fractional) to (N, 3) LPS mm."""
        p = np.atleast_2d(np.asarray(ijk, dtype=float))
        return p @ self.ijk_to_lps[:3, :3].T + self.ijk_to_lps[:3, 3]

    def lps_to_ijk_points(self, lps: np.ndarray) -> np.ndarray:
        """Map an (N, 3) array of LPS mm points to continuous (i, j, k) indices."""
        p = np.atleast_2d(np.asarray(lps, dtype=float))
        inv = self.lps_to_ijk
        return p @ inv[:3, :3].T + inv[:3, 3]

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (cm^3)."""
        return float(np.prod(self.spacing)) / 1000.0

    def same_grid(self, other: "Volume", tol_mm: float = 1e-3) -> bool:
        """True when ``other`` has the same voxel grid: shape, and voxel centres within ``tol_mm``."""
        if self.shape_kji != other.shape_kji:
            return False
        corners = np.array([[0, 0, 0], [n - 1 for n in self.shape_ijk]], dtype=float)
        return bool(np.allclose(self.ijk_to_lps_points(corners), other.ijk_to_lps_points(corners), atol=tol_mm)
                    and np.allclose(self.ijk_to_lps[:3, :3], other.ijk_to_lps[:3, :3], atol=1e-4))

    def with_array(self, array: np.ndarray, **changes: Any) -> "Volume":
        """A new Volume on the same grid holding ``array`` (e.g. a label map); metadata is copied shallowly."""
        kw = dict(spacing=self.spacing, origin=self.origin, direction=self.direction.copy(),
                  modality=self.modality, metadata=dict(self.metadata))
        kw.update(changes)
        return Volume(array=array, **kw)
