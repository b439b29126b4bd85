"""Every Slicer / Qt / CTK / VTK / MRML name the Slicer module uses must exist in Slicer's real source.

Scanned: EVERY .py file under OncoSeg/ (OncoSeg.py and its helper package OncoSegModuleLib), so moving MRML calls
out of OncoSeg.py cannot move them out of the checks.

The list (Testing/slicer_api_names.json) is built by Testing/make_slicer_api_names.py from the shared name index
(Slicer/Slicer, SlicerRT, PyTorchUtils at named commits) plus names verified with git grep in named repositories.
Also checks the .ui file against the code: every ``self.ui.X`` exists, every parameter name is a node field.
"""

import ast
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from OncoSegLib.slicer_support.api_check import module_files, used_names

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "OncoSeg" / "OncoSeg.py"
#: every Python file of the Slicer module: what the name, signal, arity and .ui checks scan
MODULE_FILES = module_files(ROOT / "OncoSeg")
UI = ROOT / "OncoSeg" / "Resources" / "UI" / "OncoSeg.ui"
API = json.loads((ROOT / "Testing" / "slicer_api_names.json").read_text())


class Resolver:
    def __init__(self, api):
        self.qualified = set(api["qualified"])
        self.classes = api["classes"]
        self.singletons = api["singletons"]
        self.verified = {(v["kind"], v["name"]) for v in api["verified"]}
        self.all_methods = set()
        for c in self.classes.values():
            self.all_methods.update(c["methods"].split())

    def methods(self, cls):
        out = set()
        while cls in self.classes:
            out.update(self.classes[cls]["methods"].split())
            cls = self.classes[cls].get("base")
        return out

    def qualified_ok(self, name):
        if name in self.qualified or ("qualified", name) in self.verified:
            return True
        if name.endswith(".__init__") and name[: -len(".__init__")] in self.qualified:
            return True
        if name in self.singletons:  # the object itself, passed as an argument (GetSubjectHierarchyNode(scene))
            return True
        parts = name.split(".")
        for single, cls in self.singletons.items():
            if name.startswith(single + ".") and len(parts) == len(single.split(".")) + 1:
                return parts[-1] in self.methods(cls)
        if parts[0] == "slicer" and len(parts) >= 2 and parts[1] in self.classes:
            return len(parts) == 2 or (len(parts) == 3 and parts[2] in self.methods(parts[1]))
        return False

    def ok(self, used):
        if used.kind == "qualified":
            return self.qualified_ok(used.name)
        if used.kind == "class":
            return used.name in self.classes or used.name == "qSlicerAbstractCoreModule"
        if used.kind == "vtk_method":
            return used.name in self.all_methods or ("method", used.name) in self.verified
        if used.kind == "qt_method":
            return ("qt_method", used.name) in self.verified or used.name in self.all_methods
        return False


def _missing_names(files):
    """``file:line kind name`` of every used name that is not in Slicer's source, over ``files``."""
    r = Resolver(API)
    return [f"{f.name}:{n.line} {n.kind} {n.name}" for f in files for n in used_names(f.read_text()) if not r.ok(n)]


def test_the_scan_covers_every_python_file_of_the_module():
    names = {f.relative_to(ROOT).as_posix() for f in MODULE_FILES}
    assert {"OncoSeg/OncoSeg.py", "OncoSeg/OncoSegModuleLib/mrml_segments.py", "OncoSeg/OncoSegModuleLib/markups.py",
            "OncoSeg/OncoSegModuleLib/exports.py", "OncoSeg/OncoSegModuleLib/volumes.py",
            "OncoSeg/OncoSegModuleLib/panels.py"} <= names
    assert names == {p.relative_to(ROOT).as_posix() for p in (ROOT / "OncoSeg").rglob("*.py")
                     if "__pycache__" not in p.parts}
    # the moved MRML calls are found where they now live
    segments = {n.name for n in used_names((ROOT / "OncoSeg" / "OncoSegModuleLib" / "mrml_segments.py").read_text())}
    assert {"slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment",
            "slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage",
            "GetBinaryLabelmapRepresentation", "vtkMRMLSegmentationNode"} <= segments


def test_every_slicer_name_in_the_module_exists_in_slicer_source():
    names = [n for f in MODULE_FILES for n in used_names(f.read_text())]
    kinds = {n.kind for n in names}
    assert {"qualified", "vtk_method", "qt_method", "class"} <= kinds  # the scan really found names
    missing = _missing_names(MODULE_FILES)
    assert not missing, "names not found in Slicer's source:\n" + "\n".join(missing)


def test_a_wrong_name_in_a_helper_file_fails_the_check(tmp_path):
    """A wrong Slicer name put into a moved file (not OncoSeg.py) is reported with that file's name."""
    for f in MODULE_FILES:
        target = tmp_path / f.relative_to(ROOT / "OncoSeg")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f.read_text())
    markups = tmp_path / "OncoSegModuleLib" / "markups.py"
    markups.write_text(markups.read_text().replace("arrayFromMarkupsControlPoints", "arrayFromMarkupControlPoints", 1)
                       .replace("GetNthControlPointPositionStatus", "GetNthControlPointStatus", 1))
    missing = _missing_names(module_files(tmp_path))
    assert sorted(missing) == sorted([m for m in missing if m.startswith("markups.py:")]) and len(missing) == 2
    assert any("slicer.util.arrayFromMarkupControlPoints" in m for m in missing)
    assert any("GetNthControlPointStatus" in m for m in missing)


def test_checker_catches_invented_names():
    src = """
import slicer, qt, vtk
from slicer.util import arrayFromVolume, arrayFromVolumeInvented
slicer.util.loadUI("x")
slicer.util.loadUIX("x")
node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNodeX")
node.GetSegmentation().AddEmptySegmentX("a")
slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
slicer.vtkMRMLSegmentationNode.NoSuchStatic()
slicer.mrmlScene.NoSuchSceneMethod()
slicer.util.arrayFromVolume(node).astype(bool)
"""
    r = Resolver(API)
    bad = sorted(n.name for n in used_names(src) if not r.ok(n))
    assert bad == sorted(["slicer.util.arrayFromVolumeInvented", "slicer.util.loadUIX", "vtkMRMLSegmentationNodeX",
                          "AddEmptySegmentX", "slicer.vtkMRMLSegmentationNode.NoSuchStatic",
                          "slicer.mrmlScene.NoSuchSceneMethod"])


def test_name_list_records_where_each_name_comes_from():
    for key in ("slicer-core", "slicerrt", "slicer-pytorch"):
        assert len(API["sources"][key]["commit"]) >= 7
    for v in API["verified"]:
        assert v["repo"] in ("Slicer/Slicer", "Kitware/VTK", "commontk/CTK") and v["path"] and len(v["commit"]) == 40
    assert API["qualified"]["slicer.util.arrayFromSegmentBinaryLabelmap"]["path"] == "Base/Python/slicer/util.py"


def _ui_widgets():
    tree = ET.parse(UI)
    widgets = {w.get("name"): w for w in tree.iter("widget")}
    params = {}
    for name, w in widgets.items():
        for p in w.findall("property"):
            if p.get("name") == "SlicerParameterName":
                params[name] = p.find("string").text
    return widgets, params


def _parameter_fields():
    trees = [ast.parse(f.read_text()) for f in MODULE_FILES]
    cls = next(n for t in trees for n in t.body if isinstance(n, ast.ClassDef) and n.name == "OncoSegParameterNode")
    return {s.target.id for s in cls.body if isinstance(s, ast.AnnAssign)}


def test_ui_matches_code_and_parameter_node():
    widgets, params = _ui_widgets()
    used = set()
    for node in (n for f in MODULE_FILES for n in ast.walk(ast.parse(f.read_text()))):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui":
            used.add(node.attr)
    assert used, "no self.ui.* use found"
    assert used <= set(widgets), f"widgets missing from the .ui: {sorted(used - set(widgets))}"
    fields = _parameter_fields()
    assert set(params.values()) <= fields, sorted(set(params.values()) - fields)
    # choices of combo boxes come from OncoSegLib (one source of truth)
    from OncoSegLib.slicer_support import params as P
    assert {"modality", "propagateDirection", "propagateMethod", "overwritePolicy", "promptAxis", "device"} <= set(params.values())
    assert "auto" in P.MODALITY_CHOICES
    classes = {w.get("class") for w in widgets.values()}
    r = Resolver(API)
    for c in classes:
        if c.startswith(("qMRML", "qSlicer")):
            assert c in r.classes, c


@pytest.mark.parametrize("path", [f.relative_to(ROOT).as_posix() for f in MODULE_FILES])
def test_module_imports_no_heavy_packages_at_load(path):
    """Slicer must load the module before torch/transformers are installed (first-use dialog installs them)."""
    tree = ast.parse((ROOT / path).read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name.split(".")[0] for n in top for a in n.names} | {n.module.split(".")[0] for n in top
                                                                     if isinstance(n, ast.ImportFrom) and n.module}
    assert not names & {"torch", "transformers", "peft", "huggingface_hub", "pydicom", "highdicom", "nibabel"}
    import importlib
    for mod in ("geometry", "prompts", "params", "merge", "worker", "dependencies", "core", "api_check"):
        importlib.import_module(f"OncoSegLib.slicer_support.{mod}")


# ----------------------------------------------------------------------------------- semantics beyond names
from OncoSegLib.slicer_support.api_check import calls, connections, instance_classes  # noqa: E402


def _sender_class(sender, widgets, attrs):
    if len(sender) == 3 and sender[:2] == ("self", "ui"):
        return widgets[sender[2]].get("class")
    if len(sender) == 2 and sender[0] == "self":
        return attrs.get(sender[1])
    return None


def _signal_problems(source, widgets, api):
    verified = {(s["class"], s["signature"]) for s in api["signals"]}
    attrs = instance_classes(source)
    problems = []
    for c in connections(source):
        cls = _sender_class(c.sender, widgets, attrs)
        if cls is None:
            problems.append(f"line {c.line}: sender {'.'.join(c.sender)} of {c.signature} has no known class")
        elif (cls, c.signature) not in verified:
            problems.append(f"line {c.line}: {cls} has no verified signal {c.signature}")
    return problems


def _call_problems(source, api):
    arity, sigs = api["arity"], api["signatures"]
    problems = []
    for c in calls(source):
        if c.starred:
            continue
        if not c.qualified and c.name in arity:
            n = c.positional + len(c.keywords)
            if not any(lo <= n <= hi for lo, hi in arity[c.name]["counts"]):
                problems.append(f"line {c.line}: {c.name} takes {arity[c.name]['counts']} arguments, given {n}")
        if c.qualified and c.name in sigs:
            s = sigs[c.name]
            if c.positional > s["positional"] and not s["varargs"]:
                problems.append(f"line {c.line}: {c.name} takes at most {s['positional']} positional arguments")
            unknown = [k for k in c.keywords if k not in s["params"]]
            if unknown and not s["varkw"]:
                problems.append(f"line {c.line}: {c.name} has no parameter {unknown}")
            given = set(s["params"][:c.positional]) | set(c.keywords)
            missing = [p for p in s["params"][:s["required"]] if p not in given]
            if missing:
                problems.append(f"line {c.line}: {c.name} misses required {missing}")
    return problems


def test_connected_signals_exist_on_the_sender_class():
    widgets, _ = _ui_widgets()
    widgets = {name: {"class": w.get("class")} for name, w in widgets.items()}
    sources = {f.name: f.read_text() for f in MODULE_FILES}
    assert sum(len(connections(source)) for source in sources.values()) >= 10  # the scan found the connections
    assert [f"{name}: {p}" for name, source in sources.items() for p in _signal_problems(source, widgets, API)] == []


def test_call_arity_and_keywords_match_the_real_declarations():
    sources = {f.name: f.read_text() for f in MODULE_FILES}
    checked = [c for source in sources.values() for c in calls(source)
               if (not c.qualified and c.name in API["arity"]) or (c.qualified and c.name in API["signatures"])]
    assert len(checked) >= 40  # most Slicer calls are covered by the tables
    assert [f"{name}: {p}" for name, source in sources.items() for p in _call_problems(source, API)] == []


def test_semantic_checks_catch_wrong_signals_arity_and_keywords():
    src = """
import slicer, qt
import PyTorchUtils
class W:
    def setup(self):
        self.timer = qt.QTimer()
        self.timer.connect("timeout(int)", self.f)
        self.ui.segmentButton.connect("clicked()", self.f)
        self.ui.inputSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.f)
        node.GetItemParent()
        seg.AddEmptySegment("a", "b", (1, 0, 0), "extra")
        slicer.util.loadUI("x", parent=None)
        slicer.util.arrayFromSegmentBinaryLabelmap(seg)
        PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersion=">=2")
        slicer.util.tryWithErrorDisplay("m", waitCursor=True)
"""
    widgets = {"segmentButton": {"class": "QPushButton"}, "inputSelector": {"class": "qMRMLNodeComboBox"}}
    sig = _signal_problems(src, widgets, API)
    assert len(sig) == 2 and "timeout(int)" in sig[0] + sig[1] and "clicked()" in sig[0] + sig[1]
    bad = " ".join(_call_problems(src, API))
    for expected in ("GetItemParent", "AddEmptySegment", "loadUI", "arrayFromSegmentBinaryLabelmap",
                     "torchVersion"):
        assert expected in bad, expected
    assert "tryWithErrorDisplay" not in bad


def test_semantic_tables_record_provenance():
    for s in API["signals"]:
        assert s["repo"] and s["path"] and len(s["commit"]) == 40
    for name, a in API["arity"].items():
        assert a["path"].endswith(".h") and len(a["commit"]) == 40, name
    assert API["arity"]["AddEmptySegment"]["counts"] == [[0, 3]]  # (segmentId="", segmentName="", color=nullptr)
    assert API["signatures"]["PyTorchUtils.PyTorchUtilsLogic.installTorch"]["params"][:3] == [
        "askConfirmation", "forceComputationBackend", "torchVersionRequirement"]


#: properties every widget has (QWidget) and those of QAbstractButton (ctkCollapsibleButton's Qt base)
_QWIDGET = {"toolTip", "enabled", "visible", "geometry", "sizePolicy", "minimumSize", "maximumSize", "whatsThis"}
_QABSTRACTBUTTON = {"text", "checkable", "checked", "icon"}


def _ui_property_problems(ui_path, api):
    tree = ET.parse(ui_path)
    problems = []
    for w in tree.iter("widget"):
        cls = w.get("class")
        info = api["ui_classes"].get(cls)
        if info is None:
            continue
        allowed = set(info["properties"]) | _QWIDGET | (_QABSTRACTBUTTON if cls == "ctkCollapsibleButton" else set())
        for prop in w.findall("property"):
            if prop.get("stdset") == "0":  # dynamic property (SlicerParameterName)
                continue
            name = prop.get("name")
            if name not in allowed:
                problems.append(f"{w.get('name')}: {cls} has no property {name}")
            enum = prop.find("enum")
            if enum is not None and "::" in enum.text:
                owner, value = enum.text.split("::", 1)
                values = {v for vs in info["enums"].values() for v in vs}
                if owner == cls and value not in values:
                    problems.append(f"{w.get('name')}: {enum.text} is not an enum value of {cls}")
    return problems


def test_ui_properties_of_slicer_and_ctk_widgets_exist():
    used = {w.get("class") for w in ET.parse(UI).iter("widget")}
    assert {"qMRMLNodeComboBox", "qSlicerMarkupsPlaceWidget", "ctkCollapsibleButton"} <= used
    assert _ui_property_problems(UI, API) == []


def test_ui_property_check_catches_typos(tmp_path):
    bad = UI.read_text().replace('name="showChildNodeTypes"', 'name="showChildTypes"', 1).replace(
        "ForcePlaceSingleMarkup", "ForcePlaceOneMarkup", 1)
    p = tmp_path / "bad.ui"
    p.write_text(bad)
    problems = _ui_property_problems(p, API)
    assert len(problems) == 2 and "showChildTypes" in problems[0] + problems[1]
