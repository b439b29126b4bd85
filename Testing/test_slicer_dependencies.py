"""Dependency plan of the Slicer module: floors and ceilings, never touching Slicer's own packages."""

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from OncoSegLib.slicer_support import dependencies as dep

ROOT = Path(__file__).resolve().parents[1]

# what a fresh Slicer 5.10-5.13 Python holds (versions from Slicer's SuperBuild) and no OncoSeg packages yet
FRESH_SLICER = {"numpy": "2.4.6", "scipy": "1.17.1", "SimpleITK": "2.5.3", "vtk": "9.5.0", "pydicom": "3.0.2",
                "highdicom": "0.27.0", "Pillow": "12.2.0", "requests": "2.34.2", "packaging": "26.2",
                "typing_extensions": "4.15.0", "pip": "25.1"}


def test_fresh_slicer_installs_torch_first_then_our_packages_pinned_against_slicer():
    plan = dep.plan_install(FRESH_SLICER, "/tmp/c.txt")
    assert plan.torch_action == "install"
    assert plan.to_install == list(dep.REQUIREMENTS)
    assert plan.pip_args[-2:] == ["--constraint", "/tmp/c.txt"]
    pins = dict(line.split("==") for line in plan.constraints_text.split())
    assert pins["numpy"] == "2.4.6" and pins["simpleitk"] == "2.5.3" and pins["vtk"] == "9.5.0"
    assert "pip" not in pins
    # pip args never name a package Slicer owns
    for a in plan.pip_args[:-2]:
        assert dep.normalize(Requirement(a).name) not in dep.SLICER_OWNED
    assert not plan.owned_too_old
    assert "numpy: 2.4.6" in plan.summary() and "PyTorch" in plan.summary()


def test_every_requirement_has_floor_and_ceiling_and_excludes_slicer_packages():
    for spec in dep.REQUIREMENTS:
        r = Requirement(spec)
        lows = [s for s in r.specifier if s.operator in (">=", ">")]
        highs = [s for s in r.specifier if s.operator in ("<", "<=")]
        assert lows and highs, spec
        assert Version(lows[0].version) < Version(highs[0].version)
        assert dep.normalize(r.name) not in dep.SLICER_OWNED
    with pytest.raises(ValueError, match="floor and a ceiling"):
        dep.plan_install({}, "c", requirements=("transformers>=5",))
    with pytest.raises(ValueError, match="owned by Slicer"):
        dep.plan_install({}, "c", requirements=("numpy>=1,<3",))


def test_satisfied_packages_are_not_reinstalled_and_out_of_range_ones_are():
    installed = dict(FRESH_SLICER, torch="2.6.0+cu124", transformers="5.24.0", peft="0.21.2",
                     huggingface_hub="1.1.0", safetensors="0.6.2", nibabel="4.0.2", PyYAML="6.0.2")
    plan = dep.plan_install(installed, "c.txt")
    assert plan.torch_action == "ok"
    assert plan.to_install == ["nibabel>=5.0,<6"]  # 4.0.2 is below the floor
    assert "torch==2.6.0+cu124" in plan.constraints_text.split()  # a dependency must not swap the CUDA build
    installed["nibabel"] = "5.3.2"
    plan = dep.plan_install(installed, "c.txt")
    assert plan.nothing_to_do and plan.pip_args == []
    installed["transformers"] = "6.0.0"  # above the ceiling: replaced by an allowed version
    assert dep.plan_install(installed, "c.txt").to_install == ["transformers>=5.0,<6"]


def test_old_torch_and_old_slicer_packages_are_reported_not_touched():
    installed = dict(FRESH_SLICER, torch="2.1.0", numpy="1.21.0")
    plan = dep.plan_install(installed, "c.txt")
    assert plan.torch_action == "upgrade"
    assert plan.owned_too_old == ["numpy 1.21.0 < 1.24"]
    assert "numpy" not in " ".join(plan.to_install)
    assert "numpy==1.21.0" in plan.constraints_text.split()


def test_module_requirements_file_matches_the_plan():
    text = (ROOT / "OncoSeg" / "Resources" / "requirements.txt").read_text()
    assert dep.read_requirements_file(text) == list(dep.REQUIREMENTS)


def test_pyproject_floors_agree_with_slicer_requirements():
    import tomllib
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    ours = {dep.normalize(Requirement(s).name): Requirement(s) for s in dep.REQUIREMENTS}
    for s in deps:
        r = Requirement(s)
        mine = ours.get(dep.normalize(r.name))
        if mine is None:
            continue
        floor = [x.version for x in r.specifier if x.operator == ">="]
        my_floor = [x.version for x in mine.specifier if x.operator == ">="]
        if floor and my_floor:
            assert Version(my_floor[0]) >= Version(floor[0]), (s, str(mine))
