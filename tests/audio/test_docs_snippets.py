"""Every ```python block of README.md and docs/*.md runs against real outputs of the test session.

Blocks run in file order, sharing one namespace per file, in a folder where `out/text-corpus`,
`out/audio-shards` and `out/moshi-finetune` are the text run, the audio run and its moshi-finetune
export (the make targets' default OUTPUT folders). A block preceded by `<!-- snippet: skip (reason) -->`
is not run. This file sits with the audio tests because it needs the session's audio run.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!--\s*snippet:\s*skip[^>]*-->\s*\n)?```python\n(.*?)```", re.S)


def snippets(page: Path) -> list[str]:
    return [code for skip, code in BLOCK.findall(page.read_text("utf-8")) if not skip]


@pytest.fixture(scope="module")
def outputs_folder(text_run, conversation_run, tmp_path_factory):
    from moshi_data.beam_jobs import moshi_finetune_export

    folder = tmp_path_factory.mktemp("docs")
    (folder / "out").mkdir()
    (folder / "out" / "text-corpus").symlink_to(text_run[0])
    (folder / "out" / "audio-shards").symlink_to(conversation_run["output"])
    moshi_finetune_export.main(["--input", str(conversation_run["output"]), "--output", str(folder / "out" / "moshi-finetune")])
    return folder


def test_the_pages_hold_snippets():
    assert sum(len(snippets(page)) for page in PAGES) >= 3


@pytest.mark.parametrize("page", [p for p in PAGES if snippets(p)], ids=lambda p: p.name)
def test_snippets_run(page, outputs_folder, monkeypatch, tmp_path):
    monkeypatch.chdir(outputs_folder)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    namespace: dict = {"__name__": "__snippet__"}
    for index, code in enumerate(snippets(page), 1):
        try:
            exec(compile(code, f"{page.name} snippet {index}", "exec"), namespace)
        except Exception as error:  # noqa: BLE001 - name the snippet that broke
            pytest.fail(f"{page.relative_to(REPO)} snippet {index} failed: {type(error).__name__}: {error}\n{code}")
