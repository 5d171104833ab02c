"""MinHash near-duplicate removal as a Beam transform (no single in-memory LSH index).

signatures + band keys in workers -> GroupByKey(band key) -> star edges to the bucket's smallest id
-> connected components (union-find combiner over the edges only, i.e. over documents that have a
near duplicate) -> every document is tagged: a cluster's smallest id is kept and records the cluster
size, the others are removed as ``near_duplicate``. The result does not depend on the worker count
or the order of elements.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from moshi_data.pipeline.text.accounting import add_to_funnel
from moshi_data.pipeline.text.minhash import MinHasher, UnionFind, star_edges

KEPT = "kept"
REMOVED = "removed"


class BandKeysFn(beam.DoFn):
    """(band key, doc id) for every LSH band of a document's MinHash signature."""

    def __init__(self, config: Mapping[str, Any], id_fn: Callable, text_fn: Callable):
        self.config = dict(config)
        self.id_fn, self.text_fn = id_fn, text_fn
        self.hasher = None

    def setup(self):
        self.hasher = MinHasher(self.config)

    def process(self, element):
        doc_id = self.id_fn(element)
        for key in self.hasher.band_keys(self.hasher.signature(self.text_fn(element))):
            yield key, doc_id


class ClustersFn(beam.CombineFn):
    """Union-find over edges; output: id -> (representative = smallest id, cluster size)."""

    def create_accumulator(self):
        return UnionFind()

    def add_input(self, union_find, edge):
        union_find.union(*edge)
        return union_find

    def merge_accumulators(self, accumulators):
        merged = UnionFind()
        for union_find in accumulators:
            for node in union_find.parent:
                merged.union(node, union_find.find(node))
        return merged

    def extract_output(self, union_find):
        return union_find.clusters()


class TagByClusterFn(beam.DoFn):
    """Routes each document: the representative (or a singleton) to ``kept`` as (doc, cluster size),
    the other members to ``removed`` as (doc, representative id)."""

    def __init__(self, id_fn: Callable):
        self.id_fn = id_fn
        self.removed = Metrics.counter("minhash", "near_duplicates_removed")
        self.clustered = Metrics.counter("minhash", "kept_with_near_duplicates")

    def process(self, element, clusters):
        doc_id = self.id_fn(element)
        representative, size = clusters.get(doc_id, (doc_id, 1))
        if representative == doc_id:
            if size > 1:
                self.clustered.inc()
            yield element, size
        else:
            self.removed.inc()
            yield pvalue.TaggedOutput(REMOVED, (element, representative))


class NearDuplicateClusters(beam.PTransform):
    """Documents -> one dict {id: (representative, cluster size)} for the ids that have near duplicates."""

    def __init__(self, config: Mapping[str, Any], id_fn: Callable, text_fn: Callable):
        super().__init__()
        self.config, self.id_fn, self.text_fn = dict(config), id_fn, text_fn

    def expand(self, docs):
        return (
            docs
            | "BandKeys" >> beam.ParDo(BandKeysFn(self.config, self.id_fn, self.text_fn))
            | "GroupByBand" >> beam.GroupByKey()
            | "StarEdges" >> beam.FlatMap(lambda item: star_edges(item[1]))
            | "Clusters" >> beam.CombineGlobally(ClustersFn())
        )


class MinHashDedup(beam.PTransform):
    """Near-duplicate removal; returns outputs ``kept`` ((doc, cluster size)) and ``removed``
    ((doc, representative id)). ``id_fn``/``text_fn`` read a document's unique id and text."""

    def __init__(self, config: Mapping[str, Any], id_fn: Callable, text_fn: Callable):
        super().__init__()
        self.config, self.id_fn, self.text_fn = dict(config), id_fn, text_fn

    def expand(self, docs):
        clusters = docs | "Clusters" >> NearDuplicateClusters(self.config, self.id_fn, self.text_fn)
        return docs | "TagByCluster" >> beam.ParDo(
            TagByClusterFn(self.id_fn), pvalue.AsSingleton(clusters)
        ).with_outputs(REMOVED, main=KEPT)


# ------------------------------------------------------------------ the text job's cross-document stage
STAGE = "minhash"
REASON = "near_duplicate"
CLUSTER_SIZE_COLUMN = "minhash_cluster_size"


def cluster_size_columns() -> list:
    """The Parquet column the MinHash stage adds to kept documents."""
    import pyarrow as pa

    return [pa.field(CLUSTER_SIZE_COLUMN, pa.int32())]


class DropNearDuplicatesFn(beam.DoFn):
    """Per chunk: drops the non-representative members of each cluster (reason ``near_duplicate``),
    records the cluster size on kept documents, and tallies the funnel after MinHash."""

    def __init__(self, metrics_namespace: str):
        self.namespace = metrics_namespace

    def process(self, chunk, clusters):
        start = time.perf_counter()
        kept = []
        for doc in chunk.docs:
            representative, size = clusters.get(doc.doc_key, (doc.doc_key, 1))
            if representative != doc.doc_key:
                chunk.filter_document(doc, REASON)
                continue
            doc.fields[CLUSTER_SIZE_COLUMN] = size
            doc.line_counts[STAGE] = len(doc.lines)
            add_to_funnel(chunk.tally, STAGE, doc)
            kept.append(doc)
        chunk.docs = kept
        Metrics.counter(self.namespace, f"ms_{STAGE}").inc(int((time.perf_counter() - start) * 1000))
        yield chunk


def minhash_chunks(chunks, config: Mapping[str, Any], metrics_namespace: str):
    """Text-job cross-document stage: PCollection[DocChunk] -> PCollection[DocChunk] without near
    duplicates; document ids are the job's ``doc_key`` (file index, record index), so the kept
    representative is the earliest document of its cluster in input order."""
    texts = chunks | "MinHashTexts" >> beam.FlatMap(lambda chunk: [(doc.doc_key, doc.text) for doc in chunk.docs])
    clusters = texts | "MinHashClusters" >> NearDuplicateClusters(
        config[STAGE], id_fn=lambda item: item[0], text_fn=lambda item: item[1]
    )
    return chunks | "DropNearDuplicates" >> beam.ParDo(
        DropNearDuplicatesFn(metrics_namespace), pvalue.AsSingleton(clusters)
    )
