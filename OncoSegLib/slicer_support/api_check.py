"""List the Slicer / Qt / CTK / VTK names a Python module uses, by reading its syntax tree (nothing is imported).

Used by the API-name test: every name the Slicer module calls (every .py under ``OncoSeg/``: OncoSeg.py and its
helper package OncoSegModuleLib) must appear in ``Testing/slicer_api_names.json``, a list assembled from Slicer's,
SlicerRT's and PyTorchUtils' real source (with repository, path and commit per name). :func:`module_files` lists
the files to scan.

Kinds of names reported:
- ``"qualified"``: attribute chains rooted at an imported Slicer-side module, normalised to the module path, e.g.
  ``slicer.util.arrayFromVolume``, ``qt.QTimer``, ``vtk.vtkMatrix4x4``, ``slicer.vtkMRMLSegmentationNode.
  GetReferenceImageGeometryReferenceRole``, ``PyTorchUtils.PyTorchUtilsLogic.installTorch`` (a call in the chain,
  ``X().y``, is read as ``X.y``); names imported with ``from slicer... import`` resolve to their full path;
- ``"class"``: MRML class names given as strings (``AddNewNodeByClass("vtkMRMLSegmentationNode")``);
- ``"vtk_method"``: ``obj.Method(...)`` calls with a VTK-style capitalised name on any other object (MRML nodes,
  VTK objects): the name must exist as a method of some indexed class;
- ``"qt_method"``: ``self.ui.<widget>.<method>(...)`` calls and ``.connect(...)`` signal names on widgets.

Beyond names, :func:`connections` lists every ``sender.connect("signal(types)", ...)`` with its sender, and
:func:`calls` every call with its argument counts and keywords, so a test can check signal signatures, the
arity of wrapped C++ methods and the keywords of Slicer's Python functions against the real source.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

#: top-level modules whose names are checked
ROOTS = ("slicer", "qt", "ctk", "vtk", "PyTorchUtils", "DicomRtImportExportPlugin", "DICOMLib", "SampleData")

_VTK_METHOD = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_MRML_CLASS = re.compile(r"^(vtkMRML|vtkSlicer|vtkSegment|vtkOriented|qSlicer|qMRML)[A-Za-z0-9]+$")
_SIGNAL = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\(")


@dataclass(frozen=True)
class UsedName:
    kind: str  # qualified, class, vtk_method, qt_method
    name: str
    line: int


_CLASS_CALL = re.compile(r"^[A-Z][A-Za-z0-9]*(Logic|Class|Widget|Node|Plugin)$")


def _chain(node: ast.AST) -> list[str] | None:
    """Attribute chain ``a.b.c`` -> ["a", "b", "c"]; None when rooted at something other than a Name.

    A call inside the chain ends it unless the callee is a class being instantiated (``X.SomeLogic().method``):
    what a function returns (a numpy array, a string) is not a Slicer name.
    """
    parts: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Call):
            callee = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if not _CLASS_CALL.match(callee):
                parts.clear()  # keep only the part up to and including the callee
            node = node.func
        elif isinstance(node, ast.Name):
            parts.append(node.id)
            return parts[::-1]
        else:
            return None


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> qualified name for imports of the checked roots."""
    alias: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in ROOTS:
                    alias[a.asname or a.name.split(".")[0]] = a.asname and a.name or a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ROOTS:
            for a in node.names:
                if a.name != "*":
                    alias[a.asname or a.name] = f"{node.module}.{a.name}"
    return alias


def used_names(source: str) -> list[UsedName]:
    """All checked names used in ``source`` (a module's text), in order of appearance, duplicates removed."""
    tree = ast.parse(source)
    alias = _aliases(tree)
    local = set()  # names bound by imports of anything but the checked roots (our packages, PIL...): not Slicer's
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module and node.module.split(".")[0]
                                                                    not in ROOTS)):
            local.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Import):
            local.update((a.asname or a.name).split(".")[0] for a in node.names if a.name.split(".")[0] not in ROOTS)
    out: list[UsedName] = []
    seen: set[tuple[str, str]] = set()

    def add(kind: str, name: str, line: int) -> None:
        if (kind, name) not in seen:
            seen.add((kind, name))
            out.append(UsedName(kind, name, line))

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ROOTS:
            for a in node.names:
                if a.name != "*":
                    add("qualified", f"{node.module}.{a.name}", node.lineno)
        if isinstance(node, ast.Attribute):
            chain = _chain(node)
            if chain and chain[0] in alias:
                add("qualified", ".".join([alias[chain[0]], *chain[1:]]), node.lineno)
        if isinstance(node, ast.Name) and node.id in alias and isinstance(node.ctx, ast.Load):
            add("qualified", alias[node.id], node.lineno)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and _MRML_CLASS.match(node.value):
            add("class", node.value, node.lineno)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            chain = _chain(node.func)
            meth = node.func.attr
            if chain is None or (chain[0] not in alias and chain[0] not in local):
                if _VTK_METHOD.match(meth):
                    add("vtk_method", meth, node.lineno)
                if chain and chain[:2] == ["self", "ui"] and len(chain) >= 4:
                    add("qt_method", meth, node.lineno)
                if meth == "connect" and node.args and isinstance(node.args[0], ast.Constant) \
                        and isinstance(node.args[0].value, str):
                    m = _SIGNAL.match(node.args[0].value)
                    if m:
                        add("qt_method", m.group(1), node.lineno)
        if isinstance(node, ast.Attribute) and not isinstance(node.ctx, ast.Load):
            chain = _chain(node)
            if chain and chain[:2] == ["self", "ui"] and len(chain) >= 4:
                add("qt_method", node.attr, node.lineno)  # property assignment, e.g. button.enabled = ...
    return _drop_prefixes(out)


def _drop_prefixes(names: list[UsedName]) -> list[UsedName]:
    """Keep only the longest chains: ``slicer.util.loadUI`` makes ``slicer.util`` and ``slicer`` redundant."""
    q = {n.name for n in names if n.kind == "qualified"}
    return [n for n in names if n.kind != "qualified" or not any(o.startswith(n.name + ".") for o in q)]


def used_names_in_file(path: str | Path) -> list[UsedName]:
    """:func:`used_names` of a file."""
    return used_names(Path(path).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Connection:
    """``sender.connect("signal(types)", slot)``: the sender's attribute chain and the signal signature as written."""

    sender: tuple[str, ...]
    signature: str
    line: int


@dataclass(frozen=True)
class Call:
    """One call: ``name`` is qualified (``slicer.util.errorDisplay``) when rooted at a checked import, else the
    called attribute's name (``GetItemParent``); counts of positional arguments and the keyword names."""

    name: str
    qualified: bool
    positional: int
    keywords: tuple[str, ...]
    starred: bool
    line: int


def connections(source: str) -> list[Connection]:
    """Every ``X.connect("sig(...)", ...)`` call with a literal signal signature."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "connect"
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
                and _SIGNAL.match(node.args[0].value)):
            chain = _chain(node.func.value) or []
            out.append(Connection(tuple(chain), node.args[0].value.replace(" ", ""), node.lineno))
    return out


def instance_classes(source: str) -> dict[str, str]:
    """``self.<attr> = qt.<Class>(...)`` / ``ctk.<Class>(...)`` assignments: attribute -> class name."""
    tree = ast.parse(source)
    alias = _aliases(tree)
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            callee = _chain(node.value.func)
            if not callee or callee[0] not in alias or alias[callee[0]] not in ("qt", "ctk"):
                continue
            for t in node.targets:
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                    out[t.attr] = callee[-1]
    return out


def _through_result(node: ast.AST) -> bool:
    """True when an attribute chain goes through a function's result (``f(x).copy``): a method of what it returned."""
    while isinstance(node, (ast.Attribute, ast.Call)):
        if isinstance(node, ast.Call):
            callee = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if not _CLASS_CALL.match(callee):
                return True
            node = node.func
        else:
            node = node.value
    return False


def calls(source: str) -> list[Call]:
    """Every call ``a.b.c(...)`` (qualified when rooted at a checked import) and ``obj.Method(...)``."""
    tree = ast.parse(source)
    alias = _aliases(tree)
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        starred = any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords)
        positional = len(node.args)
        keywords = tuple(k.arg for k in node.keywords if k.arg is not None)
        if isinstance(node.func, ast.Name) and node.func.id in alias:
            out.append(Call(alias[node.func.id], True, positional, keywords, starred, node.lineno))
        elif isinstance(node.func, ast.Attribute):
            chain = _chain(node.func) if not _through_result(node.func) else None
            if chain and chain[0] in alias:
                out.append(Call(".".join([alias[chain[0]], *chain[1:]]), True, positional, keywords, starred,
                                node.lineno))
            else:
                out.append(Call(node.func.attr, False, positional, keywords, starred, node.lineno))
    return out


def module_files(module_dir: str | Path) -> list[Path]:
    """Every Python file of a Slicer module folder (the module script and its helper packages), sorted; compiled
    caches are left out. These are the files the name, signal, arity and .ui checks scan."""
    return sorted(p for p in Path(module_dir).rglob("*.py") if "__pycache__" not in p.parts)
