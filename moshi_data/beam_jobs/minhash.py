"""MinHash near-duplicate removal as Beam transforms: nothing proportional to the documents on one worker.

signatures + band keys in workers -> GroupByKey(band key, salt) -> star edges to the bucket's
smallest id -> connected components in unrolled large-star / small-star rounds (Kiveris et al.
2014; one GroupByKey each, node keys salted so a giant component is spread over ``salts`` keys) ->
exact check that every component is a star (a combiner per node) -> the small unsettled residue, if
any, finished by union-find on one worker (bounded by config, else the job fails) -> every document
is tagged by joining its tag by id / chunk id: a cluster's smallest id is kept and records the
cluster size, the others are removed as ``near_duplicate``. The result does not depend on the worker
count, the salts or the order of elements.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from moshi_data.beam_jobs import coders  # noqa: F401 - registers the DocChunk coder (with_output_types(DocChunk) below)
from moshi_data.beam_jobs.stage_timer import StageTimer
from moshi_data.pipeline.text.accounting import add_to_funnel
from moshi_data.pipeline.text.chunk import DocChunk, pack_chunk, unpack_chunk
from moshi_data.pipeline.text.document import file_index_of
from moshi_data.pipeline.text.minhash import (UNSETTLED, MinHasher, UnionFind, final_label, large_star, node_status,
                                              salt_of, small_star, star_edges)

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


def salted_buckets(item, salts: int) -> list:
    """(band key, id) -> ((band key, salt of id), id): a bucket of 10^6 ids is spread over ``salts`` keys."""
    key, doc_id = item
    return [((key, salt_of(doc_id, salts)), doc_id)]


def sub_bucket_edges(item) -> Iterator:
    """A salted part of a bucket -> star edges to its smallest id, and (band key, that id) to link the parts."""
    (key, _), ids = item
    edges = star_edges(ids)
    yield from edges
    yield pvalue.TaggedOutput("part_minima", (key, edges[0][1] if edges else min(ids)))


def part_minima_edges(item) -> list:
    """The smallest ids of a bucket's parts -> star edges to the bucket's smallest id."""
    return star_edges(item[1])


class BucketEdges(beam.PTransform):
    """(band key, id) -> edges joining the ids of each bucket (two salted GroupByKeys)."""

    def __init__(self, salts: int):
        super().__init__()
        self.salts = salts

    def expand(self, band_ids):
        parts = (band_ids
                 | "SaltBuckets" >> beam.FlatMap(salted_buckets, self.salts)
                 | "GroupByBucketPart" >> beam.GroupByKey()
                 | "PartEdges" >> beam.FlatMap(sub_bucket_edges).with_outputs("part_minima", main="edges"))
        linked = (parts.part_minima
                  | "GroupByBucket" >> beam.GroupByKey()
                  | "LinkParts" >> beam.FlatMap(part_minima_edges))
        return (parts.edges, linked) | "BucketEdges" >> beam.Flatten()


def large_star_messages(edge, salts: int) -> list:
    """An edge -> both endpoints' neighbourhoods, keyed by (node, salt of the neighbour)."""
    a, b = edge
    return [((a, salt_of(b, salts)), b), ((b, salt_of(a, salts)), a)] if a != b else []


def small_star_messages(edge, salts: int) -> list:
    """An edge -> the larger endpoint's neighbourhood of smaller nodes, keyed by (node, salt)."""
    a, b = edge
    if a == b:
        return []
    low, high = (a, b) if a < b else (b, a)
    return [((high, salt_of(low, salts)), low)]


def to_node(item) -> tuple:
    (node, salt), neighbour = item
    return node, (salt, neighbour)


class NodeMinimumFn(beam.CombineFn):
    """(salt, neighbour) messages of one node -> (smallest neighbour, the salts it has): at most
    ``salts`` values per node whatever its degree (the runner pre-combines before the shuffle)."""

    def create_accumulator(self):
        return None, frozenset()

    def add_input(self, accumulator, message):
        low, salts = accumulator
        salt, neighbour = message
        return (neighbour if low is None else min(low, neighbour)), salts | {salt}

    def merge_accumulators(self, accumulators):
        lows, salts = [], set()
        for low, part_salts in accumulators:
            if low is not None:
                lows.append(low)
            salts |= part_salts
        return min(lows, default=None), frozenset(salts)

    def extract_output(self, accumulator):
        return accumulator


def broadcast_minimum(item) -> list:
    """(node, (smallest neighbour, salts)) -> ((node, salt), min(node, smallest neighbour)) for each
    salted part the node has."""
    node, (low, salts) = item
    return [((node, salt), min(low, node)) for salt in sorted(salts)]


class StarStepFn(beam.DoFn):
    """One salted part of a node's neighbourhood and the node's minimum -> the step's edges; records
    the part's size (the largest per-key state of the rounds)."""

    def __init__(self, step):
        self.step = step
        self.key_size = Metrics.distribution("minhash", "star_key_neighbours")
        self.edges = Metrics.counter("minhash", "star_edges")

    def process(self, item):
        (node, _), grouped = item
        neighbours = grouped["neighbours"]
        self.key_size.update(len(neighbours))
        edges = self.step(node, grouped["low"][0], neighbours)
        self.edges.inc(len(edges))
        yield from edges


class SaltedStarStep(beam.PTransform):
    """Edges -> edges after one large-star or small-star step. Messages are keyed by (node, salt of
    the neighbour), so a node of degree d holds d / salts neighbours per key; the node's minimum (a
    combiner per node: at most ``salts`` values) comes back to every part (CoGroupByKey). Two shuffles
    per step."""

    def __init__(self, messages: Callable, step: Callable, salts: int):
        super().__init__()
        self.messages, self.step, self.salts = messages, step, salts

    def expand(self, edges):
        messages = edges | "Messages" >> beam.FlatMap(self.messages, self.salts)
        minimum = (messages
                   | "ToNode" >> beam.Map(to_node)
                   | "NodeMinimum" >> beam.CombinePerKey(NodeMinimumFn())
                   | "ToParts" >> beam.FlatMap(broadcast_minimum))
        return ({"neighbours": messages, "low": minimum}
                | "JoinMinimum" >> beam.CoGroupByKey()
                | "Step" >> beam.ParDo(StarStepFn(self.step)))


class NodeStatusFn(beam.CombineFn):
    """(is smaller, neighbour) messages of one node -> (two smallest distinct smaller neighbours,
    has a larger one): constant memory per node whatever its degree."""

    def create_accumulator(self):
        return (), False

    def add_input(self, accumulator, message):
        smaller, larger = accumulator
        is_smaller, other = message
        if not is_smaller:
            return smaller, True
        return tuple(sorted(set(smaller) | {other})[:2]), larger

    def merge_accumulators(self, accumulators):
        smaller, larger = set(), False
        for part, has_larger in accumulators:
            smaller.update(part)
            larger = larger or has_larger
        return tuple(sorted(smaller)[:2]), larger

    def extract_output(self, accumulator):
        return accumulator


def status_messages(edge) -> list:
    a, b = edge
    return [(a, (b < a, b)), (b, (a < b, a))] if a != b else []


class ComponentsNotConverged(RuntimeError):
    """The rounds left more unsettled edges than one worker may finish."""


class BoundedCollect(beam.CombineFn):
    """Items -> (how many came in, duplicates included; the distinct items as a frozenset, or None when
    there are more than ``limit``): bounded memory, and the count either way."""

    def __init__(self, limit: int):
        self.limit = limit

    def create_accumulator(self):
        return 0, set()

    def add_input(self, accumulator, item):
        count, items = accumulator
        if items is not None:
            items.add(item)
            if len(items) > self.limit:
                items = None
        return count + 1, items

    def merge_accumulators(self, accumulators):
        count, merged = 0, set()
        for part_count, items in accumulators:
            count += part_count
            if merged is not None and items is not None:
                merged |= items
                if len(merged) > self.limit:
                    merged = None
            else:
                merged = None
        return count, merged

    def extract_output(self, accumulator):
        count, items = accumulator
        return count, None if items is None else frozenset(items)


def _not_converged(what: str, count: int, rounds: int, limit: int) -> ComponentsNotConverged:
    return ComponentsNotConverged(
        f"MinHash components not converged after {rounds} rounds: {count} {what} left, more than "
        f"minhash_components.residue_max_edges={limit} one worker may finish; raise minhash_components.rounds")


class ResidueEdgesFn(beam.DoFn):
    """Edges touching an unsettled node: the residue finished by union-find on one worker."""

    def __init__(self, rounds: int, limit: int):
        self.rounds, self.limit = rounds, limit

    def process(self, edge, unsettled):
        count, nodes = unsettled
        if nodes is None:
            raise _not_converged("unsettled nodes", count, self.rounds, self.limit)
        if edge[0] in nodes or edge[1] in nodes:
            yield tuple(sorted(edge))


class ResidueUnionFind(beam.CombineFn):
    """Union-find over at most ``limit`` residue edges -> node -> smallest node of its component."""

    def __init__(self, rounds: int, limit: int):
        self.rounds, self.limit = rounds, limit

    def create_accumulator(self):
        return set()

    def add_input(self, edges, edge):
        edges.add(edge)
        if len(edges) > self.limit:
            raise _not_converged("residue edges", len(edges), self.rounds, self.limit)
        return edges

    def merge_accumulators(self, accumulators):
        merged = set()
        for edges in accumulators:
            merged |= edges
            if len(merged) > self.limit:
                raise _not_converged("residue edges", len(merged), self.rounds, self.limit)
        return merged

    def extract_output(self, edges):
        union_find = UnionFind()
        for a, b in sorted(edges):
            union_find.union(a, b)
        return union_find.labels()


class ConnectedComponents(beam.PTransform):
    """Edges -> ``labels`` (node, smallest node of its component) for every node of an edge, ``sizes``
    (label, component size) and ``summary`` (one dict: rounds, converged, largest_component,
    residue_edges).

    ``rounds`` large-star + small-star rounds are unrolled in the graph (``SaltedStarStep`` each); then every node's status is checked exactly (a combiner per node). Nodes of
    components that are not stars yet, and their edges (at most ``residue_max_edges``, else the job
    fails with the count), are finished by union-find on one worker."""

    def __init__(self, components: Mapping[str, Any]):
        super().__init__()
        self.rounds = int(components["rounds"])
        self.salts = int(components["salts"])
        self.limit = int(components["residue_max_edges"])

    def expand(self, edges):
        for index in range(self.rounds):
            edges = (edges
                     | f"LargeStar{index}" >> SaltedStarStep(large_star_messages, large_star, self.salts)
                     | f"SmallStar{index}" >> SaltedStarStep(small_star_messages, small_star, self.salts))
        status = (edges
                  | "StatusMessages" >> beam.FlatMap(status_messages)
                  | "NodeStatus" >> beam.CombinePerKey(NodeStatusFn())
                  | "Classify" >> beam.MapTuple(lambda node, acc: (node, node_status(acc[0], acc[1], node))))
        unsettled_nodes = status | "Unsettled" >> beam.FlatMap(lambda item: [item[0]] if item[1][0] == UNSETTLED else [])
        unsettled = unsettled_nodes | "CollectUnsettled" >> beam.CombineGlobally(BoundedCollect(self.limit))
        residue = (edges
                   | "ResidueEdges" >> beam.ParDo(ResidueEdgesFn(self.rounds, self.limit), pvalue.AsSingleton(unsettled))
                   | "FinishResidue" >> beam.CombineGlobally(ResidueUnionFind(self.rounds, self.limit)))
        labels = status | "Label" >> beam.Map(
            lambda item, residue_labels: (item[0], final_label(item[0], item[1][1], residue_labels)),
            pvalue.AsSingleton(residue))
        sizes = (labels
                 | "OnePerNode" >> beam.MapTuple(lambda _, label: (label, 1))
                 | "ComponentSize" >> beam.CombinePerKey(sum))
        largest = sizes | beam.Values() | "Largest" >> beam.CombineGlobally(lambda values: max(values, default=0))
        rounds, salts = self.rounds, self.salts
        summary = (edges.pipeline | "SummaryOnce" >> beam.Create([None])
                   | "Summary" >> beam.Map(
                       lambda _, unsettled, residue, largest: {
                           "rounds": rounds, "salts": salts, "converged": unsettled[0] == 0, "unsettled_nodes": unsettled[0],
                           "residue_nodes": len(residue), "largest_component": largest},
                       pvalue.AsSingleton(unsettled), pvalue.AsSingleton(residue), pvalue.AsSingleton(largest)))
        return {"labels": labels, "sizes": sizes, "summary": summary}


def cluster_tags(labels, sizes) -> beam.PCollection:
    """(node, ("removed", representative)) for the non-representatives, (node, ("size", n)) for the
    representatives: what each document needs to know, routed by its own id."""
    removed = labels | "RemovedTags" >> beam.FlatMap(
        lambda item: [(item[0], (REMOVED, item[1]))] if item[0] != item[1] else [])
    kept = sizes | "SizeTags" >> beam.MapTuple(lambda label, size: (label, (KEPT, size)))
    return (removed, kept) | "Tags" >> beam.Flatten()


class NearDuplicateClusters(beam.PTransform):
    """Documents -> ``tags`` (id, ("removed", representative) | ("kept", cluster size)) for the ids that
    have near duplicates, and ``summary``."""

    def __init__(self, config: Mapping[str, Any], components: Mapping[str, Any], id_fn: Callable, text_fn: Callable):
        super().__init__()
        self.config, self.components, self.id_fn, self.text_fn = dict(config), dict(components), id_fn, text_fn

    def expand(self, docs):
        edges = (docs
                 | "BandKeys" >> beam.ParDo(BandKeysFn(self.config, self.id_fn, self.text_fn))
                 | "Buckets" >> BucketEdges(int(self.components["salts"])))
        components = edges | "Components" >> ConnectedComponents(self.components)
        return {"tags": cluster_tags(components["labels"], components["sizes"]), "summary": components["summary"]}


# ------------------------------------------------------------------ the text job's cross-document stage
STAGE = "minhash"
COMPONENTS = "minhash_components"  # text_corpus.yaml section: rounds, salts, residue_max_edges
REASON = "near_duplicate"
CLUSTER_SIZE_COLUMN = "minhash_cluster_size"


def cluster_size_columns() -> list:
    """The Parquet column the MinHash stage adds to kept documents."""
    import pyarrow as pa

    return [pa.field(CLUSTER_SIZE_COLUMN, pa.int32())]


class DropNearDuplicatesFn(beam.DoFn):
    """Per chunk and its cluster tags: drops the non-representative members of each cluster (reason
    ``near_duplicate``), records the cluster size on kept documents, and tallies the funnel after MinHash."""

    def __init__(self, metrics_namespace: str):
        self.timer = StageTimer(metrics_namespace)

    def process(self, item):
        _, grouped = item
        with self.timer.time(STAGE):
            chunk = unpack_chunk(grouped["chunk"][0])
            tags = dict(grouped["tags"])  # doc key -> (kind, value); at most the chunk's documents
            kept = []
            for doc in chunk.docs:
                kind, value = tags.get(doc.doc_key, (KEPT, 1))
                if kind == REMOVED:
                    chunk.filter_document(doc, REASON)
                    continue
                doc.fields[CLUSTER_SIZE_COLUMN] = value
                doc.line_counts[STAGE] = len(doc.lines)
                add_to_funnel(chunk.tally, STAGE, doc)
                kept.append(doc)
            chunk.docs = kept
        yield chunk


def chunk_nodes(chunk) -> list:
    """Component nodes of a chunk's documents: (doc key, chunk index), ordered by doc key, so the
    representative is the earliest document of its cluster in input order and a tag finds its chunk."""
    return [((doc.doc_key, chunk.chunk_index), doc.text) for doc in chunk.docs]


def packed_by_id(chunk, level: int, counter: tuple[str, str] = ("minhash", "shuffle_bytes_chunks_minhash")) -> tuple:
    """(chunk id, packed chunk): a chunk on its way into a join (here: to meet its cluster tags);
    its packed bytes are added to ``counter`` (namespace, name)."""
    packed = pack_chunk(chunk, level)
    Metrics.counter(*counter).inc(len(packed))
    return chunk.chunk_id, packed


def route_to_chunk(item) -> tuple:
    """A node's tag -> keyed by the chunk id (file index, chunk index) of its document."""
    (doc_key, chunk_index), (kind, value) = item
    if kind == REMOVED:
        value = value[0]  # the representative's doc key
    return (file_index_of(doc_key), chunk_index), (doc_key, (kind, value))


def minhash_chunks(chunks, config: Mapping[str, Any], metrics_namespace: str):
    """Text-job cross-document stage: PCollection[DocChunk] -> (PCollection[DocChunk] without near
    duplicates, PCollection of one summary dict). Tags join their chunk by chunk id."""
    texts = chunks | "MinHashTexts" >> beam.FlatMap(chunk_nodes)
    clusters = texts | "MinHashClusters" >> NearDuplicateClusters(
        config[STAGE], config[COMPONENTS], id_fn=lambda item: item[0], text_fn=lambda item: item[1])
    tags = clusters["tags"] | "RouteToChunk" >> beam.Map(route_to_chunk)
    keyed = chunks | "KeyChunks" >> beam.Map(packed_by_id, int(config["shuffle"]["compression_level"]))
    kept = ({"chunk": keyed, "tags": tags}
            | "JoinClusterTags" >> beam.CoGroupByKey()
            | "DropNearDuplicates" >> beam.ParDo(DropNearDuplicatesFn(metrics_namespace)).with_output_types(DocChunk))
    return kept, clusters["summary"]
