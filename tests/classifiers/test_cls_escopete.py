"""The real navigation boilerplate of the Escopete page (whirlwind.warc.wet), repeated across the
pages of a site, is removed by the dedup stages: exact line dedup on every page but the canonical
one, and the fuzzy-dedup classifier (trained on the exact-dedup line samples) on the canonical page."""
from __future__ import annotations

import io

import pytest
from warcio.archiveiterator import ArchiveIterator

from moshi_data.classifiers.evaluation import exact_dedup_survivors
from moshi_data.classifiers.fuzzy_dedup import fuzzy_model_path, train_fuzzy
from moshi_data.classifiers.line_samples import line_sample_records
from moshi_data.classifiers.sources import iter_documents, resolve_root
from moshi_data.pipeline.config import load_config
from moshi_data.pipeline.text.fuzzy_dedup import FuzzyDedupStage

# Municipalities of the same province: page k is the real page with its subject renamed, like the
# pages of one wiki site that share menus and templates.
NAMES = ["Escopete", "Alhondiga", "Budia", "Chiloeches", "Fuentelencina", "Irueste", "Pastrana", "Yebra"]
NAVIGATION = ["Ir al contenido", "Menú principal", "mover a la barra lateral", "Portalada", "Actualidat",
              "Zaguers cambeos", "Una pachina a l'azar", "Creyar cuenta", "Dentrar-ie", "Ferramientas personals",
              "Cambiar a la tabla de contenidos", "Modificar os enlaces", "Amostrar l'historial",
              "Pachinas que enlazan con ista", "Cambios relacionatos", "Descargar como PDF"]


def escopete_lines(shared_data) -> list[str]:
    data = (shared_data / "wet" / "whirlwind.warc.wet").read_bytes()
    for record in ArchiveIterator(io.BytesIO(data)):
        if record.rec_type == "conversion":
            return record.content_stream().read().decode("utf-8").split("\n")
    raise AssertionError("no conversion record in whirlwind.warc.wet")


def site_pages(shared_data) -> list[list[str]]:
    lines = escopete_lines(shared_data)
    return [[line.replace("Escopete", name) for line in lines] for name in NAMES]


def test_the_real_navigation_lines_are_in_the_page(shared_data):
    lines = escopete_lines(shared_data)
    assert all(item in lines for item in NAVIGATION)


def test_exact_dedup_removes_the_repeated_navigation_and_keeps_page_specific_lines(shared_data):
    pages = site_pages(shared_data)
    deduped = exact_dedup_survivors(pages, {"threshold": 2, "keep_canonical": True})
    for name, page in zip(NAMES[1:], deduped[1:]):
        assert not set(NAVIGATION) & set(page)
        assert f"{name} - Biquipedia, a enciclopedia libre" in page
        assert any(line.startswith(f"{name} ye un municipio") for line in page)
    assert set(NAVIGATION) <= set(deduped[0])  # the canonical occurrence (smallest id) stays


@pytest.fixture(scope="module")
def fuzzy_stage(shared_data, tmp_path_factory):
    """A fuzzy-dedup model trained on the exact-dedup line samples of the site + real CC documents."""
    tmp = tmp_path_factory.mktemp("escopete")
    config = load_config("classifiers.yaml", [f"models_dir={tmp}", "fuzzy_dedup.train.bucket=20000"])
    root = resolve_root(config["data_root"])
    cc_docs = [doc for source in config["fuzzy_dedup"]["samples_documents"] for doc in iter_documents(source, root)]
    records = line_sample_records(["\n".join(page) for page in site_pages(shared_data)] + cc_docs, threshold=2)
    samples = tmp / "line_samples.jsonl"
    samples.write_text("".join(__import__("json").dumps(r, ensure_ascii=False) + "\n" for r in records), "utf-8")
    model = fuzzy_model_path(config, [str(samples)])
    train_fuzzy(config, [str(samples)], model)
    stage = FuzzyDedupStage({"model": str(model), **config["fuzzy_dedup"]})
    stage.setup()
    return stage


def test_fuzzy_dedup_removes_the_navigation_runs_left_on_the_canonical_page(shared_data, fuzzy_stage):
    canonical = exact_dedup_survivors(site_pages(shared_data), {"threshold": 2, "keep_canonical": True})[0]
    mask = fuzzy_stage.removed_line_mask(canonical)
    removed = {line for line, drop in zip(canonical, mask) if drop}
    assert "Ir al contenido" in removed and "Menú principal" in removed
    assert len(set(NAVIGATION) & removed) >= 0.75 * len(NAVIGATION)
    article = [line for line in canonical if "Escopete" in line and len(line) > 80]  # page-specific prose
    assert len(article) == 2 and not set(article) & removed
