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
