"""Every Python package folder of the repository is declared in pyproject.toml (a non-editable install
ships only the declared ones)."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")
ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_declared():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = {ROOT / path for path in cfg["package-dir"].values()}
    assert set(cfg["packages"]) == set(cfg["package-dir"])
    folders = {p.parent for top in ("spikeforge", "hw", "sw", "sim", "boards") for p in (ROOT / top).rglob("__init__.py")
               if "__pycache__" not in p.parts}
    assert folders == declared, f"undeclared: {sorted(map(str, folders - declared))}"
