"""Which Python packages OncoSeg needs inside 3D Slicer, and exactly how to install them without harm.

Decisions (all pure, so they are tested without Slicer):
- torch comes from Slicer's PyTorch extension (``PyTorchUtils``), which picks the CUDA/CPU wheel; we only pass a
  version requirement.
- everything else goes through ``slicer.util.pip_install`` with a floor AND a ceiling (a future major release
  cannot break the module), after the user confirmed in a first-use dialog, on the main thread;
- packages Slicer itself ships (numpy, SimpleITK, VTK, scipy, pydicom, highdicom, requests, ...) are never
  installed, upgraded or replaced: they are pinned at their installed versions in a pip constraints file passed with
  every install, so a dependency that wants another numpy makes pip fail with a message instead of silently
  breaking Slicer. When one of them is older than OncoSeg needs, the plan says so (the user updates Slicer).

Installing runs pip in a child process of Slicer's own Python (``PythonSlicer``), from the module's worker thread,
streaming pip's lines as progress; Cancel kills the process (:func:`run_pip`). The same command works on Slicer 5.10
(Python 3.12) and the 5.13 previews; nothing goes through ``slicer.util.pip_install`` (which must not run off the
main thread and changed its signature across versions). Slicer 5.8 ships Python 3.9, older than OncoSegLib and
transformers 5 support: the plan says so instead of installing (:data:`MIN_PYTHON`).
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

#: oldest Python OncoSegLib runs on (Slicer >= 5.10 ships 3.12; Slicer 5.8 ships 3.9)
MIN_PYTHON: tuple[int, int] = (3, 10)

#: torch requirement handed to PyTorchUtils (the PyTorch extension chooses the wheel for the GPU/driver)
TORCH_REQUIREMENT = ">=2.4"

#: what OncoSegLib needs besides torch and Slicer's own packages; floor AND ceiling on each
REQUIREMENTS: tuple[str, ...] = (
    "transformers>=5.0,<6",
    "peft>=0.17,<1",
    "huggingface_hub>=0.34,<2",
    "safetensors>=0.4,<1",
    "nibabel>=5.0,<6",
    "pyyaml>=6.0,<7",
)

#: packages Slicer ships in its own Python (read from Slicer's SuperBuild/External_python-*.cmake, main 2026-08):
#: never installed, upgraded or replaced by OncoSeg. Names are PEP 503 normalised.
SLICER_OWNED: frozenset[str] = frozenset({
    "numpy", "scipy", "simpleitk", "vtk", "pip", "setuptools", "wheel",
    "pydicom", "six", "pillow", "retrying", "dicomweb-client", "dcmqi", "highdicom", "pyjpegls", "typing-extensions",
    "chardet", "couchdb", "gitdb", "smmap", "gitpython",
    "cryptography", "pyjwt", "wrapt", "deprecated", "pycparser", "cffi", "pynacl", "python-dateutil", "pygithub",
    "packaging", "pyparsing",
    "certifi", "idna", "charset-normalizer", "urllib3", "requests",
    # owned by the PyTorch extension
    "torch", "torchvision",
})

#: minimum versions OncoSeg needs of packages Slicer owns (checked, never installed)
SLICER_OWNED_FLOORS: dict[str, str] = {"numpy": "1.24", "scipy": "1.10", "pydicom": "3.0", "highdicom": "0.23",
                                       "pillow": "9.0"}


def normalize(name: str) -> str:
    """PEP 503 normalised distribution name ("PyYAML" -> "pyyaml", "huggingface_hub" -> "huggingface-hub")."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class InstallPlan:
    """What the first-use dialog shows and what the module then runs.

    Attributes:
        torch_action: "ok", "install" (not installed) or "upgrade" (installed but outside TORCH_REQUIREMENT;
            the user must update it through the PyTorch extension).
        torch_requirement: the version requirement to pass to PyTorchUtils.
        to_install: requirement strings pip will install (missing or outside their range).
        pip_args: the full argument list for ``slicer.util.pip_install`` (empty when nothing to install).
        constraints_text: content of the constraints file named in ``pip_args`` (Slicer's packages pinned).
        owned_too_old: messages for Slicer-owned packages older than OncoSeg needs (never upgraded by us).
        versions: lines "name: installed version (required)" for the dialog.
    """

    torch_action: str
    torch_requirement: str
    to_install: list[str] = field(default_factory=list)
    pip_args: list[str] = field(default_factory=list)
    constraints_text: str = ""
    owned_too_old: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    blocked: str = ""  # why nothing can be installed in this Slicer (e.g. its Python is too old); "" = fine

    @property
    def nothing_to_do(self) -> bool:
        return self.torch_action == "ok" and not self.to_install

    def summary(self) -> str:
        """Multi-line text for the confirmation dialog."""
        if self.blocked:
            return self.blocked
        lines = ["Installed versions:", *[f"  {v}" for v in self.versions]]
        if self.torch_action != "ok":
            lines.append(f"PyTorch {self.torch_requirement} will be {'installed' if self.torch_action == 'install' else 'updated'} "
                         "through the PyTorch extension (it picks the GPU or CPU build).")
        if self.to_install:
            lines.append("To install with pip: " + ", ".join(self.to_install))
        if self.owned_too_old:
            lines.append("Slicer's own packages are never changed by OncoSeg; these are too old: "
                         + "; ".join(self.owned_too_old) + ". Please use a newer Slicer.")
        return "\n".join(lines)


def _satisfies(version: str | None, spec: str) -> bool:
    if version is None:
        return False
    try:
        return Requirement("x" + spec).specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def plan_install(installed: Mapping[str, str], constraints_path: str,
                 requirements: Sequence[str] = REQUIREMENTS, torch_requirement: str = TORCH_REQUIREMENT,
                 owned: frozenset[str] = SLICER_OWNED,
                 python_version: Sequence[int] = tuple(sys.version_info[:2])) -> InstallPlan:
    """Decide what to install.

    Args:
        installed: distribution name -> installed version (``importlib.metadata``; any spelling of names).
        constraints_path: where the module will write ``constraints_text`` (named in ``pip_args``).
        requirements: requirement strings, each with a floor and a ceiling.
        torch_requirement: version specifier for torch.
        owned: normalised names of packages never to install/upgrade.
        python_version: (major, minor) of Slicer's Python; below :data:`MIN_PYTHON` the plan is ``blocked``.

    Raises ValueError when a requirement lacks a floor or a ceiling, or names a package Slicer owns (a programming
    error caught by the tests).
    """
    inst = {normalize(k): v for k, v in installed.items()}
    plan = InstallPlan(torch_action="ok", torch_requirement=torch_requirement)
    if tuple(python_version[:2]) < MIN_PYTHON:
        have, need = ".".join(map(str, python_version[:2])), ".".join(map(str, MIN_PYTHON))
        plan.blocked = (f"This Slicer runs Python {have}; OncoSeg needs Python {need} or newer (Slicer 5.10 or "
                        "later). Nothing was installed: please use a newer Slicer.")

    tv = inst.get("torch")
    if tv is None:
        plan.torch_action = "install"
    elif not _satisfies(tv.split("+")[0], torch_requirement):
        plan.torch_action = "upgrade"
    plan.versions.append(f"torch: {tv or 'not installed'} (needs {torch_requirement}, from the PyTorch extension)")

    for spec in requirements:
        req = Requirement(spec)
        name = normalize(req.name)
        ops = {s.operator for s in req.specifier}
        if not ops & {">=", ">", "~=", "=="} or not ops & {"<", "<=", "~=", "=="}:
            raise ValueError(f"requirement {spec!r} needs a floor and a ceiling")
        if name in owned:
            raise ValueError(f"{req.name} is owned by Slicer and must not be installed by OncoSeg")
        have = inst.get(name)
        ok = have is not None and _satisfies(have, str(req.specifier))
        plan.versions.append(f"{req.name}: {have or 'not installed'} (needs {req.specifier})")
        if not ok:
            plan.to_install.append(spec)

    for name, floor in sorted(SLICER_OWNED_FLOORS.items()):
        have = inst.get(name)
        if have is not None and not _satisfies(have, f">={floor}"):
            plan.owned_too_old.append(f"{name} {have} < {floor}")
        plan.versions.append(f"{name}: {have or 'not installed'} (Slicer's; needs >={floor})")

    pins = sorted((n, v) for n, v in inst.items() if n in owned and n not in ("pip", "setuptools", "wheel"))
    plan.constraints_text = "".join(f"{n}=={v}\n" for n, v in pins)
    if plan.to_install and not plan.blocked:
        # torch/torchvision pinned too: a dependency must not swap the PyTorch extension's CUDA build
        plan.pip_args = [*plan.to_install, "--constraint", constraints_path]
    return plan


def read_requirements_file(text: str) -> list[str]:
    """Requirement lines of a requirements.txt (comments and blanks dropped)."""
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def pip_command(python: str, plan: InstallPlan) -> list[str]:
    """The pip command line that installs ``plan`` with Slicer's Python ``python`` (``PythonSlicer``)."""
    if plan.blocked or not plan.pip_args:
        return []
    return [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
            *plan.pip_args]


def run_pip(command: Sequence[str], progress: Callable[[int, int, str], None] | None = None,
            cancel: Any = None, popen: Callable[..., Any] = subprocess.Popen) -> list[str]:
    """Run a pip command, reporting each "Collecting"/"Installing" line as progress; returns the output lines.

    Runs on the module's worker thread (never touches Qt). ``cancel`` (a CancelToken) kills pip and raises
    ``Cancelled``; a non-zero exit raises ``InputError`` with pip's last error line. ``progress(done, total, line)``
    counts steps against ``total`` = requirements to install + 1.
    """
    from OncoSegLib.errors import Cancelled, InputError

    total = max(2, sum(1 for a in command if re.match(r"^[A-Za-z0-9_.-]+[<>=~!]", a)) + 1)
    proc = popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines: list[str] = []
    done = 0
    try:
        for raw in proc.stdout:
            line = raw.rstrip()
            lines.append(line)
            if cancel is not None and cancel.cancelled:
                proc.kill()
                raise Cancelled("dependency installation cancelled; nothing half-installed is kept by pip")
            if line.startswith(("Collecting", "Installing collected", "Successfully installed")):
                done = min(total, done + 1)
                if progress is not None:
                    progress(done, total, line[:120])
    finally:
        rc = proc.wait()
    if cancel is not None and cancel.cancelled:
        raise Cancelled("dependency installation cancelled")
    if rc != 0:
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines[-1:] or ["(no output)"]
        raise InputError(f"pip failed (exit {rc}): {errors[-1][:200]}",
                         hint="see the Python console for pip's full output; check the network or proxy")
    return lines


def installed_versions() -> dict[str, str]:
    """Distribution name -> version of everything installed in this Python (``importlib.metadata``)."""
    import importlib.metadata

    return {d.metadata["Name"]: d.version for d in importlib.metadata.distributions() if d.metadata["Name"]}


def install_torch(plan: InstallPlan) -> bool:
    """Install or update torch through Slicer's PyTorch extension (``PyTorchUtils``, which picks the CUDA/CPU build);
    main thread only. Returns True when torch was already imported here (the new one needs a restart)."""
    from OncoSegLib.errors import OncoSegError

    if plan.torch_action == "ok":
        return False
    was_imported = "torch" in sys.modules  # an imported torch stays loaded in this process until a restart
    try:
        import PyTorchUtils
    except ImportError as e:
        raise OncoSegError("The PyTorch extension is missing",
                           hint="install 'PyTorch' from the Extensions Manager and restart") from e
    if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                     torchVersionRequirement=plan.torch_requirement) is None:
        raise OncoSegError("PyTorch was not installed")
    return plan.torch_action == "upgrade" and was_imported


def install_job(plan: InstallPlan, python: str) -> Callable[[Any, Any], InstallPlan]:
    """The worker-thread job installing ``plan``'s pip packages with ``python`` (``PythonSlicer``): writes the
    constraints file first, then :func:`run_pip` (progress per package, Cancel kills pip)."""
    import importlib

    if plan.pip_args:
        with open(plan.pip_args[-1], "w", encoding="utf-8") as f:
            f.write(plan.constraints_text)
    command = pip_command(python, plan)

    def job(cancel: Any, progress: Any) -> InstallPlan:
        if command:
            run_pip(command, progress, cancel)
        importlib.invalidate_caches()
        return plan

    return job
