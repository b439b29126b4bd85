"""Device choice and out-of-memory translation."""

from __future__ import annotations

import pytest
import torch

from OncoSegLib.errors import ModelError
from OncoSegLib.models.device import autocast, oom_guard, pick_device, resolve_dtype


def test_pick_device(monkeypatch):
    monkeypatch.delenv("ONCOSEG_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto").type in ("cpu", "mps")
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(ModelError, match="CUDA"):
        pick_device("cuda")
    monkeypatch.setenv("ONCOSEG_DEVICE", "cpu")
    assert pick_device("auto") == torch.device("cpu")
    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype(None) is torch.float32
    with pytest.raises(ModelError):
        resolve_dtype("int3")


def test_cpu_autocast_optional():
    a = torch.randn(8, 8)
    with autocast("cpu"):
        assert (a @ a).dtype == torch.float32
    with autocast("cpu", cpu_bf16=True):
        assert (a @ a).dtype == torch.bfloat16


@pytest.mark.parametrize("exc", [MemoryError(), torch.OutOfMemoryError("CUDA out of memory"),
                                 RuntimeError("DefaultCPUAllocator: can't allocate memory")])
def test_oom_guard(exc):
    with pytest.raises(ModelError) as err:
        with oom_guard("the image encoder"):
            raise exc
    assert "ran out of" in str(err.value) and "crop" in str(err.value)


def test_oom_guard_passes_other_errors():
    with pytest.raises(ValueError):
        with oom_guard():
            raise ValueError("x")
