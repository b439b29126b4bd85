"""Extension packaging: metadata, icon, module CMake resources present, template conventions."""

import re
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _cmake_set(text, var):
    m = re.search(rf'set\({var}\s+"([^"]*)"\)', text)
    return m.group(1) if m else None


def test_extension_metadata_and_icon():
    text = (ROOT / "CMakeLists.txt").read_text()
    assert _cmake_set(text, "EXTENSION_CATEGORY") == "Segmentation"
    assert _cmake_set(text, "EXTENSION_DEPENDS") == "PyTorch"
    assert _cmake_set(text, "EXTENSION_HOMEPAGE").startswith("https://")
    assert _cmake_set(text, "EXTENSION_ICONURL").endswith("OncoSeg.png")
    assert "add_subdirectory(OncoSeg)" in text
    for icon in (ROOT / "OncoSeg.png", ROOT / "OncoSeg" / "Resources" / "Icons" / "OncoSeg.png"):
        with Image.open(icon) as im:
            assert im.size == (128, 128)


def test_module_cmake_lists_existing_resources_and_installs_the_library():
    text = (ROOT / "OncoSeg" / "CMakeLists.txt").read_text()
    assert "WITH_GENERIC_TESTS" in text and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    block = text.split("set(MODULE_PYTHON_RESOURCES", 1)[1].split(")", 1)[0]
    for line in block.split():
        path = ROOT / "OncoSeg" / line.replace("${MODULE_NAME}", "OncoSeg")
        assert path.is_file(), path
    assert "OncoSegLib/*.py" in text and "ctkMacroCompilePythonScript" in text
    assert (ROOT / "OncoSeg" / "Testing" / "CMakeLists.txt").is_file()


def test_module_cmake_lists_every_python_file_of_the_module():
    """Every .py of the Slicer module (OncoSeg.py and its helper package) is installed: listed in
    MODULE_PYTHON_SCRIPTS, and every listed script exists (a file left out would be missing in the extension).
    Testing/ and Resources/ (the icon generator) are not module code."""
    text = (ROOT / "OncoSeg" / "CMakeLists.txt").read_text()
    block = text.split("set(MODULE_PYTHON_SCRIPTS", 1)[1].split(")", 1)[0]
    listed = {line.replace("${MODULE_NAME}", "OncoSeg") for line in block.split()}
    on_disk = {p.relative_to(ROOT / "OncoSeg").as_posix() for p in (ROOT / "OncoSeg").rglob("*.py")
               if not {"Testing", "Resources", "__pycache__"} & set(p.parts)}
    assert {"OncoSeg.py", "OncoSegModuleLib/__init__.py", "OncoSegModuleLib/mrml_segments.py"} <= on_disk
    assert listed == on_disk, f"not listed: {sorted(on_disk - listed)}; listed but missing: {sorted(listed - on_disk)}"
