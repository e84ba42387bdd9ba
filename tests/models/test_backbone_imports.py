"""The import rule of the backbone protocol, checked on the source tree.

Rule: a backbone family's package (every sub-package of ``tsm_video/models/``, e.g.
``tsm_video/models/vc2/``) is imported only by its own modules and by
``tsm_video/models/registry.py``, which registers its entries. Everything else in ``tsm_video/``
(train, generation, data, cli, demo, export, the other families) reaches a backbone through
``tsm_video.models`` (``BACKBONES``, ``build_backbone``, the ``Backbone`` protocol). Tests and
benchmarks are outside the package and may import a family's public names (e.g.
``tsm_video.models.vc2.VC2UNet``) directly.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "tsm_video"
MODELS = PACKAGE / "models"
REGISTRY = MODELS / "registry.py"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, source: str | None = None) -> list[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names = []
    source = path.read_text() if source is None else source
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.append(module)
            names += [f"{module}.{alias.name}" for alias in node.names]  # `from pkg import sub`
    return names


def _families() -> dict[str, Path]:
    return {f"tsm_video.models.{d.name}": d for d in MODELS.iterdir() if (d / "__init__.py").is_file()}


def violations(sources: dict[Path, str] | None = None) -> list[str]:
    """Rule breaks in ``sources`` (path → code; default: every module of the package)."""
    found = []
    families = _families()
    if sources is None:
        sources = {path: path.read_text() for path in sorted(PACKAGE.rglob("*.py"))}
    for path, source in sources.items():
        for imported in _imports(path, source):
            for family, folder in families.items():
                family_import = imported == family or imported.startswith(family + ".")
                if family_import and folder not in path.parents and path != REGISTRY:
                    found.append(f"{path.relative_to(PACKAGE.parent)} imports {imported}")
    return found


def test_the_scanner_flags_every_import_form():
    assert "tsm_video.models.vc2" in _families()
    train = PACKAGE / "train" / "objective.py"
    for line in (
        "import tsm_video.models.vc2.unet",
        "from tsm_video.models.vc2 import VC2UNet",
        "from tsm_video.models import vc2",
        "from ..models.vc2.text_encoder import LAYERS",
        "def f():\n    from tsm_video.models.vc2.configs import VC2_ARCH",
    ):
        assert violations({train: line}) != [], line
    inside = MODELS / "vc2" / "model.py"
    assert violations({inside: "from .unet import VC2UNet", REGISTRY: "from .vc2 import VC2_BACKBONES"}) == []
    assert violations({train: "from tsm_video.models import build_backbone"}) == []


def test_nothing_outside_a_family_imports_it():
    assert violations() == []
