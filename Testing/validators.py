"""The independent DICOM validators the tests use (dicom3tools, DCMTK, plastimatch), required where it matters.

Under CI (``CI`` set, as ``.ci/run`` runs) a missing validator FAILS the test that needs it: the checks must never
silently disappear. Elsewhere the test is skipped with a reason that pytest reports (``-ra``). ``.ci/run`` installs
them: ``apt-get install dicom3tools dcmtk plastimatch``.
"""

from __future__ import annotations

import os
import shutil

import pytest

PACKAGES = {"dciodvfy": "dicom3tools", "dcentvfy": "dicom3tools", "drtdump": "dcmtk", "plastimatch": "plastimatch"}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def require_tool(name: str) -> str:
    """Absolute path of validator ``name``; fails the test under CI when it is missing, else skips it."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name} ({PACKAGES.get(name, name)}) is not installed: apt-get install {PACKAGES.get(name, name)}"
        if in_ci():
            pytest.fail(f"required validator missing in CI: {msg}")
        pytest.skip(msg)
    return path


def require_module(name: str, install: str) -> None:
    """Import ``name`` or fail the test under CI (skip elsewhere) with the command that installs it."""
    import importlib

    try:
        importlib.import_module(name)
    except ImportError as exc:
        msg = f"Python package {name} is not importable ({exc}): {install}"
        if in_ci():
            pytest.fail(f"required package missing in CI: {msg}")
        pytest.skip(msg)
