"""Run the real ``OncoSeg/OncoSeg.py`` and its helper package ``OncoSeg/OncoSegModuleLib`` against real MRML
(Kitware's ``slicer-core`` wheel) without the Slicer app.

slicer-core brings MRML, the Segmentations / Markups / Subject Hierarchy / Volumes logics and Slicer's own
``slicer/util.py``. It does not bring the application parts the module imports at load time; this file provides
small stand-ins for exactly those, written here for the tests (no Slicer source is copied):

- ``slicer.app`` (temporary path, render pause counters, processEvents), ``slicer.mrmlScene`` (a real
  vtkMRMLScene), ``slicer.modules`` (``segmentations.logic()`` = the real vtkSlicerSegmentationsModuleLogic),
  ``slicer.dicomDatabase`` (None: volumes are not from Slicer's DICOM database);
- ``slicer.i18n`` (``tr``/``translate`` return the text), ``slicer.parameterNodeWrapper`` (typed properties over a
  real vtkMRMLScriptedModuleNode: strings/floats/bools as parameters, nodes as node references),
  ``slicer.ScriptedLoadableModule`` (bases; ``getParameterNode`` finds or creates the module's singleton node),
  ``qt`` / ``ctk`` (empty modules: only the widget uses them, and the widget is not instantiated here);
- a Subject Hierarchy observer: in the app, the Qt subject-hierarchy plugins create an SH item for each new data
  node; here a NodeAddedEvent observer does it, so code reading SH attributes sees items as in Slicer.

Use :func:`real_mrml_available` to skip when ``slicer.vtkMRMLScene`` is missing (PyPI has an unrelated package
also named ``slicer``), then :func:`install` once per test (a fresh scene each time) and :func:`load_module`.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
import unittest
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin, get_type_hints

ROOT = Path(__file__).resolve().parents[1]
MODULE_PATH = ROOT / "OncoSeg" / "OncoSeg.py"
MODULE_LIB_DIR = ROOT / "OncoSeg" / "OncoSegModuleLib"


def real_mrml_available() -> bool:
    """True when ``import slicer`` is Kitware's slicer-core (real MRML classes), not another package."""
    try:
        import slicer
    except ImportError:
        return False
    return hasattr(slicer, "vtkMRMLScene") and hasattr(slicer, "vtkSlicerSegmentationsModuleLogic")


# ------------------------------------------------------------------------------------------------ app stand-in
class FakeApp:
    """What the module and slicer.util use of ``slicer.app``; counts render pauses so tests can check balance."""

    def __init__(self, temporary_path: str) -> None:
        self.temporaryPath = temporary_path
        self.paused = 0
        self.processed = 0

    def pauseRender(self) -> None:
        self.paused += 1

    def resumeRender(self) -> None:
        self.paused -= 1

    def processEvents(self) -> None:
        self.processed += 1


# --------------------------------------------------------------------------------- parameterNodeWrapper stand-in
class Choice:
    def __init__(self, choices: Any) -> None:
        self.choices = list(choices)


class WithinRange:
    def __init__(self, lo: float, hi: float) -> None:
        self.lo, self.hi = lo, hi


def _node_property(name: str) -> property:
    def get(self: Any) -> Any:
        return self.parameterNode.GetNodeReference(name)

    def set_(self: Any, node: Any) -> None:
        self.parameterNode.SetNodeReferenceID(name, node.GetID() if node is not None else None)

    return property(get, set_)


def _value_property(name: str, kind: type, default: Any, checks: list) -> property:
    def get(self: Any) -> Any:
        node = self.parameterNode
        if not node.HasParameter(name):
            return default
        raw = node.GetParameter(name)
        if kind is bool:
            return raw == "True"
        return kind(raw)

    def set_(self: Any, value: Any) -> None:
        for c in checks:
            if isinstance(c, Choice) and value not in c.choices:
                raise ValueError(f"{name}={value!r} is not one of {c.choices}")
            if isinstance(c, WithinRange) and not c.lo <= float(value) <= c.hi:
                raise ValueError(f"{name}={value!r} is outside {c.lo}..{c.hi}")
        self.parameterNode.SetParameter(name, repr(float(value)) if kind is float else str(value))

    return property(get, set_)


def parameterNodeWrapper(cls: type) -> type:
    """Typed properties over a vtkMRMLScriptedModuleNode, as the module's fields declare them."""
    import slicer

    hints = get_type_hints(cls, include_extras=True)
    namespace: dict[str, Any] = {"__doc__": cls.__doc__, "__module__": cls.__module__}
    for name, hint in hints.items():
        checks: list = []
        if get_origin(hint) is Annotated:
            hint, *checks = get_args(hint)
        if isinstance(hint, type) and issubclass(hint, slicer.vtkMRMLNode):
            namespace[name] = _node_property(name)
        else:
            namespace[name] = _value_property(name, hint, getattr(cls, name, hint()), checks)

    def __init__(self: Any, parameterNode: Any) -> None:
        self.parameterNode = parameterNode

    def __eq__(self: Any, other: Any) -> bool:
        return getattr(other, "parameterNode", None) is self.parameterNode

    namespace.update(__init__=__init__, __eq__=__eq__, __hash__=None,
                     connectGui=lambda self, ui: None, disconnectGui=lambda self, tag: None)
    return type(cls.__name__, (), namespace)


# ----------------------------------------------------------------------------- ScriptedLoadableModule stand-in
class ScriptedLoadableModule:
    def __init__(self, parent: Any) -> None:
        self.parent = parent


class ScriptedLoadableModuleWidget:
    def __init__(self, parent: Any = None) -> None:
        self.parent = parent


class ScriptedLoadableModuleLogic:
    """``getParameterNode``: the module's singleton vtkMRMLScriptedModuleNode in ``slicer.mrmlScene``."""

    def __init__(self, parent: Any = None) -> None:
        name = type(self).__name__
        self.moduleName = name[:-len("Logic")] if name.endswith("Logic") else name

    def getParameterNode(self) -> Any:
        import slicer

        scene = slicer.mrmlScene
        node = scene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.vtkMRMLScriptedModuleNode()
            node.SetSingletonTag(self.moduleName)
            node.SetModuleName(self.moduleName)
            node.SetName(scene.GenerateUniqueName(self.moduleName))
            node = scene.AddNode(node)
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    """unittest base with Slicer's display helper (messages are collected, not shown)."""

    messages: list = []

    def delayDisplay(self, message: str, msec: int = 0) -> None:
        type(self).messages.append(message)


# ---------------------------------------------------------------------------------------------- installation
def _module(name: str, **attrs: Any) -> types.ModuleType:
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    return m


def _observe_subject_hierarchy(scene: Any) -> None:
    """Create an SH item under the scene for every new data node (what Slicer's Qt SH plugins do in the app)."""
    import slicer
    import vtk

    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)

    @vtk.calldata_type(vtk.VTK_OBJECT)  # the added node comes as call data
    def on_node_added(caller: Any, event: Any, node: Any) -> None:
        if (isinstance(node, slicer.vtkMRMLDisplayableNode) and not node.GetHideFromEditors()
                and sh.GetItemByDataNode(node) == 0):
            sh.CreateItem(sh.GetSceneItemID(), node)

    scene.AddObserver(slicer.vtkMRMLScene.NodeAddedEvent, on_node_added)
    scene._oncoseg_sh_observer = on_node_added  # keep the callback alive with the scene


def install(temporary_path: str | os.PathLike) -> Any:
    """Put the stand-ins in place around a fresh real vtkMRMLScene; returns the scene."""
    import slicer

    scene = slicer.vtkMRMLScene()
    scene.AddNode(slicer.vtkMRMLSelectionNode())  # singleton the markups logic needs (the app creates it)
    color_logic = slicer.vtkMRMLColorLogic()  # default colour tables (label map display nodes look them up)
    color_logic.SetMRMLScene(scene)
    seg_logic = slicer.vtkSlicerSegmentationsModuleLogic()
    seg_logic.SetMRMLScene(scene)
    markups_logic = slicer.vtkSlicerMarkupsLogic()
    markups_logic.SetMRMLScene(scene)
    _observe_subject_hierarchy(scene)
    slicer.mrmlScene = scene
    slicer.app = FakeApp(str(temporary_path))
    slicer.dicomDatabase = None
    slicer.modules = types.SimpleNamespace(
        segmentations=types.SimpleNamespace(logic=lambda: seg_logic),
        markups=types.SimpleNamespace(logic=lambda: markups_logic))
    slicer._oncoseg_logics = (seg_logic, markups_logic, color_logic)  # keep them alive
    sys.modules["slicer.i18n"] = _module("slicer.i18n", tr=lambda text: text,
                                         translate=lambda context, text: text)
    sys.modules["slicer.parameterNodeWrapper"] = _module(
        "slicer.parameterNodeWrapper", parameterNodeWrapper=parameterNodeWrapper, Choice=Choice,
        WithinRange=WithinRange)
    sys.modules["slicer.ScriptedLoadableModule"] = _module(
        "slicer.ScriptedLoadableModule", ScriptedLoadableModule=ScriptedLoadableModule,
        ScriptedLoadableModuleWidget=ScriptedLoadableModuleWidget,
        ScriptedLoadableModuleLogic=ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest=ScriptedLoadableModuleTest)
    for name in ("qt", "ctk"):
        sys.modules.setdefault(name, _module(name))
    return scene


def load_module(name: str = "OncoSeg") -> types.ModuleType:
    """Import the real OncoSeg/OncoSeg.py (once per process; its shared engine survives between tests) and every
    file of its helper package (see :func:`helper_modules`)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, MODULE_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    helper_modules()
    return module


def helper_modules() -> dict[str, types.ModuleType]:
    """Import every ``OncoSeg/OncoSegModuleLib/*.py`` (OncoSeg.py puts the module folder on sys.path, as Slicer
    does); file stem -> module. Raises when one is imported from anywhere but this checkout."""
    out = {}
    for path in sorted(MODULE_LIB_DIR.glob("*.py")):
        stem = path.stem
        module = importlib.import_module("OncoSegModuleLib" if stem == "__init__" else f"OncoSegModuleLib.{stem}")
        if Path(module.__file__).resolve() != path.resolve():
            raise ImportError(f"{module.__name__} came from {module.__file__}, not {path}")
        out[stem] = module
    return out
