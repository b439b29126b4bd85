"""What the Slicer panel offers beyond segmenting (issue 11 item 6), decided in slicer_support and tested here:
pip in a child process with progress and Cancel, Slicer versions whose Python is too old, keyboard shortcuts and
"next segment", CPU-mode advice, the model/device/memory line, DICOM tags on SlicerRT's exportables."""

import sys
import threading
import time

import pytest

from OncoSegLib.cancel import CancelToken
from OncoSegLib.errors import Cancelled, InputError, OncoSegError
from OncoSegLib.slicer_support import dependencies as dep
from OncoSegLib.slicer_support import dicom_tags, params

FRESH_SLICER = {"numpy": "2.4.6", "SimpleITK": "2.5.3", "vtk": "9.5.0", "pydicom": "3.0.2", "highdicom": "0.27.0",
                "torch": "2.13.0"}


def _script(body):
    return [sys.executable, "-c", body]


def test_run_pip_reports_each_step_and_returns_the_output():
    seen = []
    command = _script("print('Collecting transformers<6,>=5.0'); print('Collecting peft'); print('noise');"
                      "print('Installing collected packages: peft, transformers');"
                      "print('Successfully installed peft-0.17 transformers-5.0')")
    lines = dep.run_pip(command + ["transformers>=5.0,<6", "peft>=0.17,<1"], lambda d, t, m: seen.append((d, t, m)))
    assert [d for d, _, _ in seen] == [1, 2, 3, 3] and {t for _, t, _ in seen} == {3}
    assert seen[0][2].startswith("Collecting transformers") and "noise" in lines


def test_run_pip_failure_is_one_input_error_with_pips_error_line():
    command = _script("import sys; print('Collecting nope'); print('ERROR: No matching distribution found for nope');"
                      "sys.exit(1)")
    with pytest.raises(InputError, match="exit 1.*No matching distribution found for nope"):
        dep.run_pip(command)


def test_cancel_kills_pip():
    token = CancelToken()
    command = _script("import time; print('Collecting torch', flush=True); time.sleep(0.5);"
                      "print('Collecting more', flush=True); time.sleep(60)")
    threading.Timer(0.2, token.cancel).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        dep.run_pip(command, cancel=token)
    assert time.monotonic() - started < 10  # killed, not waited for


def test_pip_command_uses_slicers_python_and_the_constraints():
    plan = dep.plan_install(FRESH_SLICER, "/tmp/c.txt", python_version=(3, 12))
    command = dep.pip_command("/opt/Slicer/bin/PythonSlicer", plan)
    assert command[:4] == ["/opt/Slicer/bin/PythonSlicer", "-m", "pip", "install"]
    assert command[-2:] == ["--constraint", "/tmp/c.txt"] and "numpy==2.4.6" in plan.constraints_text
    assert "torch==2.13.0" in plan.constraints_text  # the PyTorch extension's build is never swapped


def test_slicer_5_8_python_3_9_is_refused_with_a_reason_not_installed_into():
    plan = dep.plan_install(FRESH_SLICER, "/tmp/c.txt", python_version=(3, 9))
    assert "Python 3.9" in plan.blocked and "Slicer 5.10" in plan.summary()
    assert plan.pip_args == [] and dep.pip_command("python", plan) == []
    assert dep.plan_install(FRESH_SLICER, "/tmp/c.txt", python_version=(3, 12)).blocked == ""


def test_shortcuts_and_next_segment():
    assert params.SHORTCUTS["undo"] == "Ctrl+Z"
    assert len(set(params.SHORTCUTS.values())) == len(params.SHORTCUTS)  # no key does two things
    assert params.next_segment_name(["Segment_1"], "Segment_1") == "Segment_2"
    assert params.next_segment_name(["Segment_1", "Segment_2", "Segment_3"], "Segment_1") == "Segment_4"
    assert params.next_segment_name([], "liver") == "liver_2"
    assert params.next_segment_name(["lesion 7"], "lesion 7") == "lesion_8"


@pytest.mark.parametrize("model, device, cuda, local, suggested, words", [
    ("liver", "auto", False, True, "litemedsam", "CPU mode"),
    ("liver", "cpu", True, True, "litemedsam", "device set to CPU"),
    ("sam3", "auto", True, False, "litemedsam", "not on this computer"),
    ("liver", "auto", True, True, None, ""),
    ("litemedsam", "cpu", False, True, None, ""),
])
def test_cpu_mode_and_missing_weights_offer_litemedsam(model, device, cuda, local, suggested, words):
    advice = params.model_advice(model, device, cuda, False, local)
    assert advice.suggested == suggested and words in advice.message


def test_status_line_names_model_device_and_weight_memory():
    from pathlib import Path

    from OncoSegLib.demo import DEMO_MODEL_DIR
    from OncoSegLib.models.loading import load_bundle
    from OncoSegLib.slicer_support.core import OncoSegCore

    core = OncoSegCore()
    core.use_bundle(load_bundle(str(DEMO_MODEL_DIR), device="cpu"), "demo", "cpu")
    line = core.status()
    mb = float(line.split(", ")[1].split(" MB")[0])
    size_mb = (Path(DEMO_MODEL_DIR) / "model.safetensors").stat().st_size / 1e6  # fp32 weights on disk
    assert line.startswith("Model ") and " on cpu" in line and abs(mb - size_mb) / size_mb < 0.05


class FakeExportable:
    def __init__(self, item, offered):
        self.subjectHierarchyItemID, self._tags, self.directory = item, dict(offered), None

    def tag(self, name):
        return self._tags.get(name, "")

    def setTag(self, name, value):
        self._tags[name] = value


def test_tag_exportables_copies_patient_study_and_series_tags():
    attributes = {(1, "DICOM.PatientID"): "P1", (2, "DICOM.StudyInstanceUID"): "1.2.3", (3, "DICOM.Modality"): "MR"}
    volume = FakeExportable(3, {"Modality": "CT", "SeriesDescription": ""})
    dicom_tags.tag_exportables([volume], lambda item, name: attributes.get((item, name), ""), 1, 2, "/out")
    assert volume.directory == "/out"
    assert volume._tags == {"Modality": "MR", "SeriesDescription": "", "PatientID": "P1", "StudyInstanceUID": "1.2.3"}


def test_run_pip_really_runs_pip():
    """pip itself (not a stand-in) through run_pip: ``pip --version`` output comes back."""
    lines = dep.run_pip([sys.executable, "-m", "pip", "--version"])
    assert lines and lines[0].startswith("pip ")


def test_install_torch_through_the_pytorch_extension(monkeypatch):
    import types

    calls = []

    class Logic:
        def installTorch(self, askConfirmation=True, torchVersionRequirement=None):
            calls.append((askConfirmation, torchVersionRequirement))
            return object()

    plan = dep.plan_install({"torch": "2.1.0"}, "/tmp/c.txt")
    assert plan.torch_action == "upgrade"
    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=Logic))
    assert dep.install_torch(plan) is True  # torch is imported in this process: a restart is needed
    assert calls == [(False, dep.TORCH_REQUIREMENT)]
    Logic.installTorch = lambda self, **kw: None
    with pytest.raises(OncoSegError, match="PyTorch was not installed"):
        dep.install_torch(plan)
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # extension not installed
    with pytest.raises(OncoSegError, match="PyTorch extension is missing"):
        dep.install_torch(plan)
    assert dep.install_torch(dep.plan_install({"torch": "2.13.0"}, "/tmp/c.txt")) is False  # nothing to do


def test_cpu_model_is_the_registrys_fallback():
    from OncoSegLib.models import registry

    assert params.CPU_MODEL == registry.FALLBACK_MODEL and params.CPU_MODEL in registry.load_manifest().models
