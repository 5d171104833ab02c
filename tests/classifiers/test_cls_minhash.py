"""MinHash near-duplicate clustering: parameters, determinism, and the Beam transform."""
from __future__ import annotations

import random

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from moshi_data.beam_jobs.minhash import KEPT, REMOVED, NearDuplicateClusters
from moshi_data.pipeline.config import load_config
from moshi_data.pipeline.text.minhash import MinHasher, cluster_texts, clusters_from_edges, shingles

CONFIG = load_config("classifiers.yaml")["minhash"]
COMPONENTS = load_config("text_corpus")["minhash_components"]
BASE = ("Escopete ye un municipio d'a provincia de Guadalachara en a comunidat autonoma de Castiella-La Mancha "
        "Ye situato a 860 metros d'altaria sobre o ran d'a mar a una distancia de 47 km de Guadalachara "
        "Escopete ye citato en as Relaciones Topograficas de los pueblos de Espanya feitas por Felipe II")
OTHER = ("Pectin is a natural product of central importance in the emerging biorefinery that uses fruit waste "
         "as a raw material generally obtained from lemon peel or from apple pomace and used as a thickener")


def corpus() -> dict[str, str]:
    return {
        "doc-03": BASE,
        "doc-01": BASE.replace("Felipe II", "Felipe II."),          # same shingles after tokenizing
        "doc-07": BASE + " Fiestas 11 d'agosto",                      # one extra shingle group: similar
        "doc-02": OTHER,
        "doc-05": OTHER.replace("lemon peel", "orange peel"),         # ~0.7 Jaccard: below threshold
        "doc-09": "a short unrelated text",
    }


def test_bands_and_rows_are_datasketch_optimal_for_threshold_08():
    hasher = MinHasher(CONFIG)
    assert (hasher.bands, hasher.rows) == (9, 13)
    assert len(hasher.band_keys(hasher.signature(BASE))) == 9
    assert shingles("One two three", 5) == {b"one two three"}


def test_clusters_keep_the_smallest_id_whatever_the_input_order():
    expected = {"doc-01": ("doc-01", 3), "doc-03": ("doc-01", 3), "doc-07": ("doc-01", 3)}
    items = list(corpus().items())
    for seed in range(3):
        random.Random(seed).shuffle(items)
        assert cluster_texts(dict(items), CONFIG) == expected


def test_connected_components_join_chains_through_the_smallest_id():
    edges = [("d", "c"), ("b", "a"), ("c", "b"), ("y", "x")]
    assert clusters_from_edges(edges) == clusters_from_edges(list(reversed(edges))) == {
        "a": ("a", 4), "b": ("a", 4), "c": ("a", 4), "d": ("a", 4), "x": ("x", 2), "y": ("x", 2),
    }


def test_beam_transform_tags_one_representative_per_cluster_with_its_size():
    """The job's clustering transform: the smallest id of a cluster is kept with the cluster size, the
    other members are removed with their representative, documents without near duplicates get no tag."""
    docs = sorted(corpus().items())
    with TestPipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as pipeline:
        clusters = (
            pipeline
            | beam.Create(docs)
            | NearDuplicateClusters(CONFIG, COMPONENTS, id_fn=lambda doc: doc[0], text_fn=lambda doc: doc[1])
        )
        assert_that(clusters["tags"], equal_to([("doc-01", (KEPT, 3)), ("doc-03", (REMOVED, "doc-01")),
                                                ("doc-07", (REMOVED, "doc-01"))]), label="tags")
        summary = clusters["summary"] | beam.Map(lambda s: (s["converged"], s["largest_component"]))
        assert_that(summary, equal_to([(True, 3)]), label="summary")
