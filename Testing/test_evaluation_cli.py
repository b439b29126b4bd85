"""`oncoseg evaluate` end to end on a tiny random model: the real session/predictor drive both protocols."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from OncoSegLib.evaluation.click_protocol import box_from_mask


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from OncoSegLib.models.tiny import save_tiny_checkpoint

    return save_tiny_checkpoint(tmp_path_factory.mktemp("m") / "tiny", image_size=56)


def test_interactive_protocol_with_the_real_session(tmp_path: Path, tiny_model: Path, capsys) -> None:  # noqa: ANN001
    from OncoSegLib.cli import main

    gts = np.zeros((5, 40, 48), dtype=np.uint8)
    gts[1:4, 8:20, 10:26] = 1
    gts[2:4, 25:33, 30:40] = 2
    imgs = np.where(gts > 0, 120, 0).astype(np.int16) + np.int16(-50)
    boxes = [box_from_mask(gts == v).to_challenge() for v in (1, 2)]
    data = tmp_path / "npz"
    data.mkdir()
    np.savez(data / "CT_toy.npz", imgs=imgs, gts=gts, spacing=np.array([0.8, 0.8, 2.0]),
             boxes=np.array(boxes, dtype=object))
    out = tmp_path / "out"
    rc = main(["evaluate", "interactive", "--data", str(data), "--model", str(tiny_model), "--device", "cpu",
               "--modality", "ct", "--out", str(out), "--quiet"])
    assert rc == 0
    with open(out / "interactive_metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1 and rows[0]["CaseName"] == "CT_toy"
    dsc = [float(rows[0][f"DSC_{i}"]) for i in range(1, 7)]
    assert all(0.0 <= d <= 1.0 for d in dsc)
    summary = json.loads((out / "interactive_summary.json").read_text())
    clicks = summary["cases"][0]["clicks"]
    assert set(clicks) == {"1", "2"}
    for lab, cl in clicks.items():  # each click lies where the truth says it must (fg click on fg voxel)
        for c in cl:
            k, j, i = c["kji"]
            assert (gts[k, j, i] == int(lab)) == c["positive"]
    assert (out / "dice_per_click.png").stat().st_size > 1000


def test_one_prompt_cli_on_phantoms(tmp_path: Path, tiny_model: Path, capsys) -> None:  # noqa: ANN001
    from OncoSegLib.cli import main

    out = tmp_path / "op"
    rc = main(["evaluate", "one-prompt", "--dataset", "phantom:1", "--prompt", "point", "--model", str(tiny_model),
               "--device", "cpu", "--out", str(out), "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| dataset | n | dice |" in text and "| modality |" in text
    with open(out / "one_prompt_cases.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["name"] for r in rows} >= {"liver", "vertebra"}


def test_interactive_box_rules_and_spacing_flag(tmp_path: Path, tiny_model: Path, capsys) -> None:  # noqa: ANN001
    """A file without boxes and --no-box both skip the box step (scored 0, model not run); --boxes-from-gt runs it;
    --physical-spacing is recorded; the two box flags together are a one-line error (exit 2)."""
    from OncoSegLib.cli import main

    gts = np.zeros((4, 32, 32), dtype=np.uint8)
    gts[1:3, 8:20, 10:24] = 1
    imgs = np.where(gts > 0, 120, 0).astype(np.int16) + np.int16(-50)
    plain, boxed = tmp_path / "plain", tmp_path / "boxed"
    plain.mkdir()
    boxed.mkdir()
    np.savez(plain / "CT_a.npz", imgs=imgs, gts=gts, spacing=np.array([0.8, 0.8, 2.0]))
    np.savez(boxed / "CT_a.npz", imgs=imgs, gts=gts, spacing=np.array([0.8, 0.8, 2.0]),
             boxes=np.array([box_from_mask(gts == 1).to_challenge()], dtype=object))
    common = ["--model", str(tiny_model), "--device", "cpu", "--modality", "ct", "--quiet", "--clicks", "2"]

    def run(data: Path, out: str, *extra: str) -> tuple[dict, dict]:
        assert main(["evaluate", "interactive", "--data", str(data), "--out", str(tmp_path / out), *common,
                     *extra]) == 0
        with open(tmp_path / out / "interactive_metrics.csv", newline="") as fh:
            row = list(csv.DictReader(fh))[0]
        return row, json.loads((tmp_path / out / "interactive_summary.json").read_text())["cases"][0]

    for data, out, extra in ((plain, "o1", ()), (boxed, "o2", ("--no-box",))):
        row, case = run(data, out, *extra)
        assert (row["DSC_1"], row["NSD_1"], row["RunningTime_1"]) == ("0.0", "0.0", "0.0")
        assert case["spacing_mode"] == "official"
    row, case = run(plain, "o3", "--boxes-from-gt", "--physical-spacing")
    assert float(row["RunningTime_1"]) > 0 and case["spacing_mode"] == "physical"
    capsys.readouterr()
    rc = main(["evaluate", "interactive", "--data", str(plain), "--out", str(tmp_path / "o4"), *common, "--no-box",
               "--boxes-from-gt"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--no-box and --boxes-from-gt" in err[0]
