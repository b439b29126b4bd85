"""Trainer mechanics on a tiny model: config validation, resume = uninterrupted, phase chaining, DDP (gloo) =
one process with doubled accumulation, sampling rules and the loss."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from OncoSegLib.cancel import CancelToken
from OncoSegLib.errors import Cancelled, InputError
from OncoSegLib.training.config import load_config, parse_config

REPO = Path(__file__).resolve().parents[1]


def small_config(out: Path, **train_over) -> dict:
    train = {"batch_size": 2, "grad_accum": 1, "lr": 1.0e-3, "max_steps": 4, "steps_per_epoch": 2,
             "eval_every": 2, "patience": 10, "val_samples": 4, "checkpoint_every": 1, "progress": False,
             "num_threads": 1}
    train.update(train_over)
    return {
        "name": "unit", "seed": 3, "output_dir": str(out),
        "model": {"source": "tiny", "image_size": 56, "device": "cpu"},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "train": train,
        "prompts": {"box": 0.5, "points": 0.5},
        "datasets": [{"kind": "phantom", "n_cases": 2, "seed": 0, "shape": [6, 56, 56]}],
        "val_datasets": [{"kind": "phantom", "n_cases": 1, "seed": 100, "shape": [6, 56, 56]}],
    }


def write_cfg(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def trained_state(run: Path, phase: str = "phase1") -> dict[str, torch.Tensor]:
    return load_file(str(run / "phases" / phase / "checkpoint" / "trainable.safetensors"))


def test_config_errors_say_what_to_fix(tmp_path: Path) -> None:
    bad = small_config(tmp_path / "r")
    bad["train"]["learning_rate"] = 1
    with pytest.raises(InputError, match="learning_rate"):
        parse_config(bad)
    bad = small_config(tmp_path / "r")
    bad["datasets"] = [{"kind": "dicomdir", "path": "x"}]
    with pytest.raises(InputError, match="unknown dataset kind"):
        parse_config(bad)
    with pytest.raises(InputError, match="not found"):
        load_config(tmp_path / "missing.yaml")


class CancelAfter(CancelToken):
    """Reports 'cancelled' from the n-th time the trainer asks (it asks once per optimiser step)."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n
        self.asked = 0

    @property
    def cancelled(self) -> bool:  # type: ignore[override]
        self.asked += 1
        return self.asked >= self.n

    def raise_if_cancelled(self) -> None:
        raise Cancelled("test cancel")


def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    from OncoSegLib.training.trainer import train

    full = load_config(write_cfg(tmp_path / "a.yaml", small_config(tmp_path / "full")))
    train(full)
    cfg = load_config(write_cfg(tmp_path / "b.yaml", small_config(tmp_path / "resumed")))
    with pytest.raises(Cancelled):
        train(cfg, cancel=CancelAfter(2))
    state = json.loads((tmp_path / "resumed/phases/phase1/checkpoint/state.json").read_text())
    assert state["step"] == 2
    assert "exp_avg" in json.dumps(list(torch.load(tmp_path / "resumed/phases/phase1/checkpoint/optimizer.pt",
                                                   weights_only=True)["state"][0].keys()))
    train(load_config(tmp_path / "b.yaml"))
    a, b = trained_state(tmp_path / "full"), trained_state(tmp_path / "resumed")
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    hist = json.loads((tmp_path / "resumed/phases/phase1/metrics.json").read_text())["history"]
    assert [r["step"] for r in hist] == [1, 2, 3, 4]
    assert (tmp_path / "resumed/phases/phase1/curves.png").read_bytes()[:4] == b"\x89PNG"
    rows = (tmp_path / "resumed/phases/phase1/metrics.csv").read_text().splitlines()
    assert rows[0].startswith("phase,step,epoch,lr,loss") and len(rows) == 5


def test_phase_chaining_starts_each_phase_from_the_previous_adapter(tmp_path: Path) -> None:
    from OncoSegLib.models.lora import load_adapter
    from OncoSegLib.models.tiny import tiny_bundle
    from OncoSegLib.training.trainer import train

    data = small_config(tmp_path / "run")
    ds, val = data.pop("datasets"), data.pop("val_datasets")
    data["phases"] = [{"name": "first", "datasets": ds, "val_datasets": val},
                      {"name": "second", "datasets": [dict(ds[0], seed=50)], "val_datasets": val,
                       "train": {"max_steps": 2, "lr": 5.0e-4}}]
    res = train(load_config(write_cfg(tmp_path / "c.yaml", data)))
    first, second = res.phases
    assert (first.steps, second.steps) == (4, 2)
    # phase 2 starts where phase 1 ended: same validation set, same weights -> same Dice before any step
    assert second.initial_val_dice == pytest.approx(first.best_val_dice, abs=1e-6)
    ph2 = yaml.safe_load((tmp_path / "run/phases/second/config.yaml").read_text())
    assert ph2["start_adapter"].endswith(os.path.join("phases", "first", "adapter"))
    assert ph2["train"]["lr"] == 5.0e-4
    # fresh optimiser: the second phase's optimiser state counts only its own steps
    opt = torch.load(tmp_path / "run/phases/second/checkpoint/optimizer.pt", weights_only=True)
    assert int(next(iter(opt["state"].values()))["step"]) == 2
    # every phase's adapter + the final one load onto a fresh base model
    for adapter in (tmp_path / "run/phases/first/adapter", tmp_path / "run/final/adapter"):
        b = tiny_bundle(0, 56)
        load_adapter(b, adapter)
        assert b.adapter == str(adapter)
    assert (tmp_path / "run/final/metrics.json").is_file() and (tmp_path / "run/final/config.yaml").is_file()
    summary = json.loads((tmp_path / "run/train_summary.json").read_text())
    assert [p["name"] for p in summary["phases"]] == ["first", "second"]
    # a finished run is not trained again
    again = train(load_config(tmp_path / "c.yaml"))
    assert again.phases[1].best_val_dice == pytest.approx(second.best_val_dice)


@pytest.mark.slow
def test_ddp_two_gloo_processes_match_one_process_with_doubled_accumulation(tmp_path: Path) -> None:
    if shutil.which("torchrun") is None and not torch.distributed.is_available():
        pytest.skip("torch.distributed unavailable")
    single = small_config(tmp_path / "single", grad_accum=2, max_steps=3, eval_every=3)
    ddp = small_config(tmp_path / "ddp", grad_accum=1, max_steps=3, eval_every=3)
    from OncoSegLib.training.trainer import train

    train(load_config(write_cfg(tmp_path / "s.yaml", single)))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "OncoSegLib", "train", "--config", str(write_cfg(tmp_path / "d.yaml", ddp)), "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = trained_state(tmp_path / "single"), trained_state(tmp_path / "ddp")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=2e-5)
    # the weights really moved (else equality would be trivial): compare with the untrained start
    from OncoSegLib.models.lora import apply_lora
    from OncoSegLib.models.tiny import tiny_bundle

    start = apply_lora(tiny_bundle(0, 56).tracker, load_config(tmp_path / "s.yaml").lora.settings())
    start_state = {n: p.detach() for n, p in start.named_parameters() if p.requires_grad}
    moved = max(float((start_state[k] - b[k]).abs().max()) for k in b if k in start_state)
    assert moved > 1e-4
    hs = json.loads((tmp_path / "single/phases/phase1/metrics.json").read_text())["history"]
    hd = json.loads((tmp_path / "ddp/phases/phase1/metrics.json").read_text())["history"]
    assert hs[-1]["val_dice"] == pytest.approx(hd[-1]["val_dice"], abs=1e-3)
