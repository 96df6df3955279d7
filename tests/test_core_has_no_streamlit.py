"""attention_viz/ is the core: it must work (and be testable) without streamlit.

Pages do layout; everything under attention_viz/ takes tensors or dataclasses and returns
tensors, dataclasses, DataFrames or figures. Importing it must never pull streamlit in.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "attention_viz"

# Imports every submodule (heavy ones such as transformers are fine), then checks sys.modules.
IMPORT_EVERYTHING = """
import importlib, pkgutil, sys
import attention_viz
names = [
    module.name
    for module in pkgutil.walk_packages(attention_viz.__path__, "attention_viz.")
    if module.name.rsplit(".", 1)[-1] != "__main__"
]
for name in names:
    importlib.import_module(name)
print("\\n".join(names))
assert "streamlit" not in sys.modules, "a core module imported streamlit"
"""


def core_files() -> list[Path]:
    files = sorted(CORE.rglob("*.py"))
    assert files, f"no Python files found under {CORE}"
    return files


def test_importing_every_core_module_does_not_import_streamlit() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    imported = set(completed.stdout.split())
    # The walk really visited the modules on disk (top-level ones at least).
    expected = {
        "attention_viz." + path.stem
        for path in CORE.glob("*.py")
        if path.stem not in ("__init__", "__main__")
    }
    assert expected <= imported, f"walk_packages missed {sorted(expected - imported)}"
    assert {"attention_viz.masks", "attention_viz.attention", "attention_viz.policy"} <= imported


_IMPORT_LINE = re.compile(r"^\s*(?:import\s+streamlit\b|from\s+streamlit\b)", re.MULTILINE)


def test_no_core_file_imports_streamlit_statically() -> None:
    offenders = []
    for path in core_files():
        source = path.read_text(encoding="utf-8")
        if _IMPORT_LINE.search(source):
            offenders.append(str(path.relative_to(REPO)))
            continue
        # Also catch imports the line pattern misses, e.g. `import os, streamlit as st`.
        for node in ast.walk(ast.parse(source, filename=str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            if any(module == "streamlit" or module.startswith("streamlit.") for module in modules):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, f"attention_viz/ must not import streamlit; move UI code to pages/: {offenders}"
