"""Build Testing/slicer_api_names.json: the Slicer-side names the module (every .py under OncoSeg/) may use, each
with where it comes from.

Sources:
1. the shared name index (../shared/slicer-api/*.json, read from Slicer/Slicer, SlicerRt/SlicerRT and PyTorchUtils
   source at the commits they name): Python functions/classes/methods and wrapped C++ classes with their methods;
2. names verified by hand in source that the index does not hold (enum events, inline static constants, VTK and Qt
   methods, application attributes): each is located here with ``git grep`` in a local snapshot of its repository
   (Slicer/Slicer, Kitware/VTK, commontk/CTK), recording repository, path and commit.

Usage: python Testing/make_slicer_api_names.py [--index DIR] [--mirrors DIR]
Without a mirror for a verified name, its previous entry in the JSON is kept (so the file can be rebuilt anywhere).
This script never reads the module's files: the list is what Slicer offers, not what we happen to call.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "Testing" / "slicer_api_names.json"

# Python files of the index -> the module name Slicer imports them as
PY_MODULES = {
    "Base/Python/slicer/util.py": "slicer.util",
    "Base/Python/slicer/ScriptedLoadableModule.py": "slicer.ScriptedLoadableModule",
    "Base/Python/slicer/i18n.py": "slicer.i18n",
    "Base/Python/slicer/packaging.py": "slicer.packaging",
    "Base/Python/slicer/cli.py": "slicer.cli",
    "Base/Python/slicer/testing.py": "slicer.testing",
    "PyTorchUtils/PyTorchUtils.py": "PyTorchUtils",
    "DicomRtImportExport/DicomRtImportExportPlugin.py": "DicomRtImportExportPlugin",
    "Modules/Scripted/SampleData/SampleData.py": "SampleData",
}
PY_PACKAGES = {  # package re-exporting its submodules' names (``from .x import *``)
    "Base/Python/slicer/parameterNodeWrapper/": "slicer.parameterNodeWrapper",
    "Modules/Scripted/DICOMLib/": "DICOMLib",
}
# C++ classes kept (with their bases): MRML nodes, Slicer logics, segmentation core; plus a few Qt widgets
CLASS_PREFIXES = ("vtkMRML", "vtkSlicer", "vtkSegment", "vtkOrientedImageData")
EXTRA_CLASSES = ("qSlicerApplication", "qSlicerMarkupsPlaceWidget", "qSlicerDICOMExportable", "qMRMLNodeComboBox",
                 "qMRMLSegmentSelectorWidget")
# application singletons -> the C++ class (and bases) Slicer wraps them as
SINGLETONS = {"slicer.mrmlScene": "vtkMRMLScene", "slicer.app": "qSlicerApplication"}

# (name, kind, repository, path glob, regex proving it) — checked by hand, located by git grep
VERIFIED = [
    # Qt through PythonQt: proven by Slicer's own Python using the same spelling
    ("qt.QTimer", "qualified", "Slicer/Slicer", "*.py", r"qt\.QTimer()"),
    ("qt.QColor", "qualified", "Slicer/Slicer", "*.py", r"qt\.QColor("),
    ("qt.QTableWidgetItem", "qualified", "Slicer/Slicer", "*.py", r"qt\.QTableWidgetItem("),
    ("qt.QFileDialog.getExistingDirectory", "qualified", "Slicer/Slicer", "*.py", r"qt\.QFileDialog\.getExistingDirectory("),
    ("slicer.app.processEvents", "qualified", "Slicer/Slicer", "*.py", r"slicer\.app\.processEvents()"),
    ("slicer.app.temporaryPath", "qualified", "Slicer/Slicer", "*.py", r"slicer\.app\.temporaryPath"),
    ("slicer.dicomDatabase.filesForSeries", "qualified", "Slicer/Slicer", "*.py", r"slicer\.dicomDatabase\.filesForSeries("),
    ("slicer.modules", "qualified", "Slicer/Slicer", "*.py", r"hasattr(slicer\.modules, "),
    ("slicer.mrmlScene.StartCloseEvent", "qualified", "Slicer/Slicer", "*.py", r"slicer\.mrmlScene\.StartCloseEvent"),
    ("slicer.mrmlScene.EndCloseEvent", "qualified", "Slicer/Slicer", "*.py", r"slicer\.mrmlScene\.EndCloseEvent"),
    ("slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent", "qualified", "Slicer/Slicer", "vtkMRMLMarkupsNode.h", r"PointPositionDefinedEvent,"),
    ("slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMUIDName", "qualified", "Slicer/Slicer", "vtkMRMLSubjectHierarchyConstants.h", r"GetDICOMUIDName()"),
    ("slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMSeriesModalityAttributeName", "qualified", "Slicer/Slicer", "vtkMRMLSubjectHierarchyConstants.h", r"GetDICOMSeriesModalityAttributeName()"),
    ("slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE", "qualified", "Slicer/Slicer", "vtkSlicerSegmentationsModuleLogic.h", r"MODE_REPLACE = 0"),
    ("slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment", "qualified", "Slicer/Slicer", "vtkSlicerSegmentationsModuleLogic.h", r"static bool SetBinaryLabelmapToSegment("),
    ("vtk.VTK_UNSIGNED_CHAR", "qualified", "Slicer/Slicer", "*.py", r"vtk\.VTK_UNSIGNED_CHAR"),
    ("vtk.util.numpy_support.vtk_to_numpy", "qualified", "Slicer/Slicer", "*.py", r"vtk\.util\.numpy_support\.vtk_to_numpy("),
    ("vtk.vtkCommand.ModifiedEvent", "qualified", "Slicer/Slicer", "*.py", r"vtk\.vtkCommand\.ModifiedEvent"),
    ("vtk.vtkMatrix4x4", "qualified", "Slicer/Slicer", "*.py", r"vtk\.vtkMatrix4x4()"),
    ("vtk.vtkVector3d", "qualified", "Slicer/Slicer", "*.py", r"vtk\.vtkVector3d("),
    ("slicer.util.VTKObservationMixin.__init__", "qualified", "Slicer/Slicer", "*.py", r"VTKObservationMixin\.__init__(self)"),
    # VTK methods (vtkImageData, vtkDataSet, vtkDataSetAttributes, vtkObject) on objects Slicer returns
    ("AllocateScalars", "method", "Kitware/VTK", "vtkImageData.h", r"void AllocateScalars(int dataType, int numComponents)"),
    ("SetExtent", "method", "Kitware/VTK", "vtkCartesianGrid.h", r"void SetExtent(VTK_FUTURE_CONST int extent\[6\])"),
    ("GetDimensions", "method", "Kitware/VTK", "vtkCartesianGrid.h", r"int\* GetDimensions()"),
    ("GetPointData", "method", "Kitware/VTK", "vtkDataSet.h", r"vtkPointData\* GetPointData()"),
    ("GetScalars", "method", "Kitware/VTK", "vtkDataSetAttributes.h", r"vtkDataArray\* GetScalars()"),
    ("GetMTime", "method", "Kitware/VTK", "vtkObject.h", r"vtkMTimeType GetMTime()"),
    ("SetSelectedColor", "method", "Slicer/Slicer", "vtkMRMLDisplayNode.h", r"vtkSetVector3Macro(SelectedColor"),
    # CTK
    ("filesForSeries", "ctk", "commontk/CTK", "ctkDICOMDatabase.h", r"filesForSeries("),
    # Qt widget methods, properties and signals used on the .ui widgets (PythonQt spelling, from Slicer's Python)
    ("addItem", "qt_method", "Slicer/Slicer", "*.py", r"\.addItem("),
    ("addItems", "qt_method", "Slicer/Slicer", "*.py", r"\.addItems("),
    ("connect", "qt_method", "Slicer/Slicer", "*.py", r"\.connect(\"clicked(bool)\""),
    ("clicked", "qt_method", "Slicer/Slicer", "*.py", r"\"clicked(bool)\""),
    ("timeout", "qt_method", "Slicer/Slicer", "*.py", r"\"timeout()\""),
    ("currentNodeChanged", "qt_method", "Slicer/Slicer", "*.py", r"\"currentNodeChanged(vtkMRMLNode\*)\""),
    ("currentTextChanged", "qt_method", "Slicer/Slicer", "*.cxx", r"QComboBox::currentTextChanged"),
    ("setColumnCount", "qt_method", "Slicer/Slicer", "*.py", r"\.setColumnCount("),
    ("setRowCount", "qt_method", "Slicer/Slicer", "*.py", r"\.setRowCount("),
    ("setHorizontalHeaderLabels", "qt_method", "Slicer/Slicer", "*.py", r"\.setHorizontalHeaderLabels("),
    ("setItem", "qt_method", "Slicer/Slicer", "*.py", r"\.setItem("),
    ("setRange", "qt_method", "Slicer/Slicer", "*.py", r"\.setRange("),
    ("setValue", "qt_method", "Slicer/Slicer", "*.py", r"\.setValue("),
    ("setVisible", "qt_method", "Slicer/Slicer", "*.py", r"\.setVisible("),
    ("setCurrentText", "qt_method", "Slicer/Slicer", "*.py", r"\.setCurrentText("),
    ("setCurrentNode", "qt_method", "Slicer/Slicer", "qSlicerMarkupsPlaceWidget.h", r"void setCurrentNode(vtkMRMLNode\* currentNode)"),
    ("text", "qt_method", "Slicer/Slicer", "*.py", r"\.text = "),
    # added in the semantic audit (each read in the header/source named by the pattern)
    ("qt.QBrush", "qualified", "Slicer/Slicer", "*.py", r"qt\.QBrush("),
    ("vtk.vtkMatrix4x4.Multiply4x4", "qualified", "Slicer/Slicer", "*.py", r"vtk\.vtkMatrix4x4\.Multiply4x4("),
    ("slicer.packaging", "qualified", "Slicer/Slicer", "packaging.py", r"^def pip_install("),
    ("slicer.vtkMRMLMarkupsNode.PositionDefined", "qualified", "Slicer/Slicer", "vtkMRMLMarkupsNode.h", r"PositionDefined, "),
    ("slicer.vtkSlicerSegmentationsModuleLogic.MODE_MERGE_MIN", "qualified", "Slicer/Slicer", "vtkSlicerSegmentationsModuleLogic.h", r"MODE_MERGE_MAX,"),
    ("slicer.vtkSlicerSegmentationsModuleLogic.MODE_MERGE_MASK", "qualified", "Slicer/Slicer", "vtkSlicerSegmentationsModuleLogic.h", r"MODE_MERGE_MASK$"),
    ("slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes", "qualified", "Slicer/Slicer", "vtkMRMLTransformNode.h", r"static int GetMatrixTransformBetweenNodes("),
    ("SetCurveTypeToLinear", "method", "Slicer/Slicer", "vtkMRMLMarkupsCurveNode.h", r"void SetCurveTypeToLinear()"),
    ("GetNthControlPointPositionStatus", "method", "Slicer/Slicer", "vtkMRMLMarkupsNode.h", r"int GetNthControlPointPositionStatus(int pointIndex)"),
    ("tag", "qt_method", "Slicer/Slicer", "qSlicerDICOMExportable.h", r"Q_INVOKABLE QString tag(QString tagName)"),
    # keyboard shortcuts of the panel (Qt classes through PythonQt, as Slicer's own Python spells them; the signal as
    # Slicer's markups toolbar connects it)
    ("qt.QShortcut", "qualified", "Slicer/Slicer", "*.py", r"qt\.QShortcut("),
    ("qt.QKeySequence", "qualified", "Slicer/Slicer", "*.py", r"qt\.QKeySequence("),
    ("activated", "qt_method", "Slicer/Slicer", "qMRMLMarkupsToolBar.cxx", r"SIGNAL(activated())"),
    ("setEnabled", "qt_method", "Slicer/Slicer", "*.py", r"\.setEnabled("),
    ("setTag", "qt_method", "Slicer/Slicer", "qSlicerDICOMExportable.h", r"Q_INVOKABLE void setTag(QString tagName, QString tagValue)"),
    ("subjectHierarchyItemID", "qt_method", "Slicer/Slicer", "qSlicerDICOMExportable.h", r"Q_PROPERTY(vtkIdType subjectHierarchyItemID"),
    ("directory", "qt_method", "Slicer/Slicer", "qSlicerDICOMExportable.h", r"Q_PROPERTY(QString directory"),
    ("enabled", "qt_method", "Slicer/Slicer", "*.py", r"\.enabled = "),
    ("toolTip", "qt_method", "Slicer/Slicer", "*.py", r"\.toolTip = "),
]


# Qt signals connected by name, per sender class: (class, normalised signature, repo, path glob, regex proving it).
# PythonQt connects "name(types)" strings; a wrong signature fails only at run time, in Slicer.
SIGNALS = [
    ("QPushButton", "clicked(bool)", "Slicer/Slicer", "TemplateKey.py", r"applyButton\.connect(\"clicked(bool)\""),
    ("QComboBox", "currentTextChanged(QString)", "Slicer/Slicer", "*.cxx", r"QComboBox::currentTextChanged"),
    ("qMRMLNodeComboBox", "currentNodeChanged(vtkMRMLNode*)", "Slicer/Slicer", "qMRMLNodeComboBox.h", r"void currentNodeChanged(vtkMRMLNode\* node);"),
    ("QTimer", "timeout()", "Slicer/Slicer", "packaging.py", r"_hideTimer\.connect(\"timeout()\""),
    ("QShortcut", "activated()", "Slicer/Slicer", "qMRMLMarkupsToolBar.cxx", r"new QShortcut(.*SIGNAL(activated())"),
]

# C++ methods whose positional argument counts are read from their declarations (one header per class). Only
# headers present in the mirrors are parsed (VTK's own are not: their methods are checked by name only).
ARITY_HEADERS = {
    "Libs/MRML/Core/vtkMRMLMarkupsNode.h": ["AddControlPointWorld", "GetNthControlPointDescription",
                                            "SetNthControlPointDescription", "GetNthControlPointPositionStatus",
                                            "GetNumberOfControlPoints", "RemoveAllControlPoints"],
    "Libs/MRML/Core/vtkMRMLMarkupsROINode.h": ["GetCenterWorld", "GetSizeWorld", "GetObjectToWorldMatrix"],
    "Libs/MRML/Core/vtkMRMLMarkupsCurveNode.h": ["SetCurveTypeToLinear"],
    "Libs/vtkSegmentationCore/vtkSegmentation.h": ["AddEmptySegment", "GetNthSegmentID", "GetNumberOfSegments",
                                                   "GetSegment", "GetSegmentIdBySegmentName", "SeparateSegmentLabelmap"],
    "Libs/vtkSegmentationCore/vtkSegment.h": ["SetTag"],
    "Libs/MRML/Core/vtkMRMLSegmentationNode.h": ["SetReferenceImageGeometryParameterFromVolumeNode",
                                                 "CreateDefaultDisplayNodes"],
    "Libs/MRML/Core/vtkMRMLSubjectHierarchyNode.h": ["CreateStudyItem", "CreateSubjectItem", "GetItemAttribute",
                                                     "GetItemByDataNode", "GetItemParent", "GetItemUID",
                                                     "GetSceneItemID", "SetItemParent"],
    "Libs/MRML/Core/vtkMRMLCrosshairNode.h": ["GetCursorPositionXYZ"],
    "Libs/MRML/Core/vtkMRMLSliceNode.h": ["GetSliceToRAS"],
    "Libs/MRML/Core/vtkMRMLVolumeNode.h": ["GetIJKToRASMatrix", "GetRASToIJKMatrix", "GetImageData"],
    "Libs/MRML/Core/vtkMRMLTransformableNode.h": ["GetParentTransformNode", "SetAndObserveTransformNodeID"],
    "Libs/MRML/Core/vtkMRMLTransformNode.h": ["IsTransformToWorldLinear", "GetMatrixTransformBetweenNodes"],
    "Libs/vtkSegmentationCore/vtkOrientedImageData.h": ["SetImageToWorldMatrix"],
    "Modules/Loadable/Segmentations/Logic/vtkSlicerSegmentationsModuleLogic.h": ["SetBinaryLabelmapToSegment"],
}

# Python functions whose signatures (parameter names, required count) are read from source with ast.
SIGNATURE_SOURCES = {
    ("Slicer/Slicer", "Base/Python/slicer/util.py"): ("slicer.util", [
        "loadUI", "childWidgetVariables", "errorDisplay", "infoDisplay", "confirmOkCancelDisplay",
        "tryWithErrorDisplay", "mainWindow", "pip_install", "arrayFromTransformMatrix", "arrayFromVTKMatrix",
        "arrayFromVolume", "arrayFromMarkupsControlPoints", "arrayFromSegmentBinaryLabelmap",
        "updateSegmentBinaryLabelmapFromArray", "addVolumeFromArray", "tempDirectory", "getModuleLogic",
        "loadVolume", "confirmYesNoDisplay", "restart"]),
    ("Slicer/Slicer", "Base/Python/slicer/packaging.py"): ("slicer.packaging", ["pip_install", "pip_ensure"]),
    ("fepegar/SlicerPyTorch", "PyTorchUtils/PyTorchUtils.py"): ("PyTorchUtils", ["PyTorchUtilsLogic.installTorch"]),
    ("SlicerRt/SlicerRT", "DicomRtImportExport/DicomRtImportExportPlugin.py"): (
        "DicomRtImportExportPlugin", ["DicomRtImportExportPluginClass.examineForExport",
                                      "DicomRtImportExportPluginClass.export"]),
}


# Qt Designer properties of Slicer/CTK widget classes used in the .ui: Q_PROPERTY names and enum values read from
# the class header (inherited Qt properties such as toolTip or text are listed by the test, not here).
UI_CLASS_HEADERS = {
    "qMRMLNodeComboBox": ("Slicer/Slicer", "Libs/MRML/Widgets/qMRMLNodeComboBox.h"),
    "qSlicerMarkupsPlaceWidget": ("Slicer/Slicer", "Modules/Loadable/Markups/Widgets/qSlicerMarkupsPlaceWidget.h"),
    "ctkCollapsibleButton": ("commontk/CTK", "Libs/Widgets/ctkCollapsibleButton.h"),
}


def header_properties(text: str) -> dict:
    """Q_PROPERTY names and the identifiers of every enum declared in a Qt header."""
    import re

    props = sorted(set(re.findall(r"Q_PROPERTY\(\s*[\w:<>]+\s+(\w+)\s+READ", text)))
    enums = {}
    for name, body in re.findall(r"enum\s+(\w+)\s*\{([^}]*)\}", text):
        body = re.sub(r"//[^\n]*", "", body)
        enums[name] = [v.split("=")[0].strip() for v in body.split(",") if v.split("=")[0].strip()]
    return {"properties": props, "enums": enums}


def _split_params(text: str) -> list[str]:
    depth, cur, out = 0, "", []
    for ch in text:
        if ch in "(<[{":
            depth += 1
        elif ch in ")>]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [p.strip() for p in out if p.strip() and p.strip() != "void"]


def declared_arities(header_text: str, method: str) -> list[list[int]]:
    """[min, max] positional argument counts of every declaration of ``method`` in a C++ header.

    A declaration is a line (not a comment, not a call inside an inline body) where a return type precedes the name.
    """
    import re

    out = []
    pat = re.compile(rf"^\s*(?:virtual\s+|static\s+|inline\s+|VTK_\w+\s+)*(?:const\s+)?[\w:<>]+[\s\*&]+{method}\s*\(")
    lines = header_text.splitlines()
    for n, line in enumerate(lines):
        if line.lstrip().startswith(("//", "*", "/*")) or not pat.search(line) or "return" in line[:line.find(method)]:
            continue
        body = "\n".join(lines[n:n + 12])
        start = body.index(method + "(") + len(method) + 1 if method + "(" in body else body.index("(") + 1
        depth, end = 1, start
        while end < len(body) and depth:
            depth += {"(": 1, ")": -1}.get(body[end], 0)
            end += 1
        params = _split_params(body[start:end - 1])
        required = sum(1 for p in params if "=" not in p)
        out.append([required, len(params)])
    return out


def _signature(tree, dotted: str) -> dict | None:
    import ast

    scope = tree.body
    parts = dotted.split(".")
    node = None
    for part in parts:
        node = next((n for n in scope if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part), None)
        if node is None:
            return None
        scope = node.body
    if not isinstance(node, ast.FunctionDef):
        return None
    a = node.args
    names = [x.arg for x in a.posonlyargs + a.args]
    if len(parts) > 1 and names and names[0] in ("self", "cls"):
        names = names[1:]
    n_defaults = len(a.defaults)
    return {"params": names + [x.arg for x in a.kwonlyargs], "positional": len(names),
            "required": len(names) - n_defaults, "varargs": a.vararg is not None, "varkw": a.kwarg is not None}


def _git(mirror: Path, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", str(mirror), *args], capture_output=True, text=True, check=False).stdout


def locate(mirrors: Path, repo: str, glob: str, regex: str) -> dict | None:
    mirror = mirrors / repo.replace("/", "+") / "repo"
    if not mirror.is_dir():
        return None
    commit = _git(mirror, "rev-parse", "HEAD").strip()
    out = _git(mirror, "grep", "-n", "-m", "1", "-G", regex, "HEAD", "--", f"*{glob}" if not glob.startswith("*") else glob)
    first = out.splitlines()[0] if out else ""
    if not first:
        return {"repo": repo, "commit": commit, "path": None}
    _, path, line = first.split(":", 3)[:3]
    return {"repo": repo, "commit": commit, "path": path, "line": int(line)}


def build(index_dir: Path, mirrors: Path, previous: dict) -> dict:
    qualified: dict[str, dict] = {}
    classes: dict[str, dict] = {}
    sources: dict[str, dict] = {}
    for f in sorted(index_dir.glob("*.json")):
        data = json.loads(f.read_text())
        src = data["source"]
        repo, _, commit = src.partition("@") if "@" in src else ({"slicerrt.json": "SlicerRt/SlicerRT",
                                                                  "slicer-pytorch.json": "fepegar/SlicerPyTorch"}
                                                                 .get(f.name, "?"), "", src)
        sources[f.stem] = {"repo": repo, "commit": commit}
        for path, names in data.get("python", {}).items():
            module = PY_MODULES.get(path) or next((m for p, m in PY_PACKAGES.items() if path.startswith(p)), None)
            if module is None:
                continue
            for name, value in names.items():
                qualified[f"{module}.{name}"] = {"source": f.stem, "path": path}
                if isinstance(value, list):
                    for meth in value:
                        qualified[f"{module}.{name}.{meth}"] = {"source": f.stem, "path": path}
        for cls, info in data.get("cxx", {}).items():
            classes[cls] = {"source": f.stem, "header": info.get("header"), "base": info.get("base"),
                            "methods": " ".join(sorted(set(info.get("methods", []))))}
    keep = {c for c in classes if c.startswith(CLASS_PREFIXES)} | set(EXTRA_CLASSES)
    for c in list(keep):  # with their base chains (inherited methods)
        while c in classes and classes[c].get("base") in classes:
            c = classes[c]["base"]
            keep.add(c)
    classes = {c: v for c, v in classes.items() if c in keep}
    old = {v["name"]: v for v in previous.get("verified", [])}
    verified = []
    for name, kind, repo, glob, regex in VERIFIED:
        where = locate(mirrors, repo, glob, regex)
        if where is None or where.get("path") is None:
            if name in old:
                verified.append(old[name])
                continue
            raise SystemExit(f"cannot verify {name}: no mirror of {repo} or pattern {regex!r} not found")
        verified.append({"name": name, "kind": kind, **where})
    import ast

    signals = []
    old_signals = {(v["class"], v["signature"]): v for v in previous.get("signals", [])}
    for cls, sig, repo, glob, regex in SIGNALS:
        where = locate(mirrors, repo, glob, regex)
        if where is None or where.get("path") is None:
            if (cls, sig) in old_signals:
                signals.append(old_signals[(cls, sig)])
                continue
            raise SystemExit(f"cannot verify signal {cls}.{sig}")
        signals.append({"class": cls, "signature": sig, **where})
    arity: dict[str, dict] = dict(previous.get("arity", {}))
    slicer_mirror = mirrors / "Slicer+Slicer" / "repo"
    if slicer_mirror.is_dir():
        commit = _git(slicer_mirror, "rev-parse", "HEAD").strip()
        for header, methods in ARITY_HEADERS.items():
            text = _git(slicer_mirror, "show", f"HEAD:{header}")
            for m in methods:
                decl = declared_arities(text, m)
                if not decl:
                    raise SystemExit(f"no declaration of {m} in {header}")
                arity[m] = {"counts": decl, "repo": "Slicer/Slicer", "path": header, "commit": commit}
    signatures: dict[str, dict] = dict(previous.get("signatures", {}))
    for (repo, path), (module, funcs) in SIGNATURE_SOURCES.items():
        mirror = mirrors / repo.replace("/", "+") / "repo"
        if not mirror.is_dir():
            continue
        commit = _git(mirror, "rev-parse", "HEAD").strip()
        tree = ast.parse(_git(mirror, "show", f"HEAD:{path}"))
        for f in funcs:
            sig = _signature(tree, f)
            if sig is None:
                raise SystemExit(f"no function {f} in {repo}/{path}")
            signatures[f"{module}.{f}"] = {**sig, "repo": repo, "path": path, "commit": commit}
    ui_classes: dict[str, dict] = dict(previous.get("ui_classes", {}))
    for cls, (repo, path) in UI_CLASS_HEADERS.items():
        mirror = mirrors / repo.replace("/", "+") / "repo"
        if not mirror.is_dir():
            continue
        info = header_properties(_git(mirror, "show", f"HEAD:{path}"))
        if not info["properties"]:
            raise SystemExit(f"no Q_PROPERTY in {repo}/{path}")
        ui_classes[cls] = {**info, "repo": repo, "path": path, "commit": _git(mirror, "rev-parse", "HEAD").strip()}
    return {
        "about": "Slicer-side names OncoSeg.py may use; built by Testing/make_slicer_api_names.py. 'qualified' and "
                 "'classes' come from the shared index (sources), 'verified' from git grep in the named repository "
                 "commit. Class methods: own methods only, walk 'base' for inherited ones.",
        "sources": sources,
        "singletons": SINGLETONS,
        "qualified": dict(sorted(qualified.items())),
        "classes": dict(sorted(classes.items())),
        "verified": verified,
        "signals": signals,
        "arity": dict(sorted(arity.items())),
        "signatures": dict(sorted(signatures.items())),
        "ui_classes": ui_classes,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", type=Path, default=ROOT.parent / "shared" / "slicer-api")
    ap.add_argument("--mirrors", type=Path, default=Path("/work/.mirror"))
    args = ap.parse_args()
    previous = json.loads(OUT.read_text()) if OUT.exists() else {}
    data = build(args.index, args.mirrors, previous)
    OUT.write_text(json.dumps(data, indent=0, sort_keys=False) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB): {len(data['qualified'])} qualified, "
          f"{len(data['classes'])} classes, {len(data['verified'])} verified, {len(data['signals'])} signals, "
          f"{len(data['arity'])} method arities, {len(data['signatures'])} Python signatures")


if __name__ == "__main__":
    main()
