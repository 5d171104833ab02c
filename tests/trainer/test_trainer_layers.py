"""Lower layers never import higher ones: pipeline/ imports neither trainer/ nor beam_jobs/."""
from __future__ import annotations

import ast
from pathlib import Path

import moshi_data

HIGHER = ("moshi_data.trainer", "moshi_data.beam_jobs")


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_pipeline_imports_no_higher_layer():
    pipeline = Path(moshi_data.__file__).parent / "pipeline"
    found = [(str(path.relative_to(pipeline)), name) for path in sorted(pipeline.rglob("*.py"))
             for name in _imports(path) if name.startswith(HIGHER)]
    assert found == []
