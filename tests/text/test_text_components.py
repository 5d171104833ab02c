"""MinHash connected components in large-star / small-star rounds (Beam), against a union-find reference."""
from __future__ import annotations

import random
from collections import defaultdict

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from moshi_data.beam_jobs.minhash import ConnectedComponents
from moshi_data.pipeline.config import load_config
from moshi_data.pipeline.text.minhash import clusters_from_edges, large_star, small_star
from text_helpers import IN_PROCESS

COMPONENTS = load_config("text_corpus")["minhash_components"]


def paper_rounds(edges, rounds: int) -> set:
    """The edges after ``rounds`` rounds of large-star then small-star, written from Kiveris et al.
    2014 (Algorithms 1 and 2) without the job's code: the reference the Beam rounds (salted or not)
    must match. Large-star: each node u links every neighbour larger than u to m(u), the smallest of
    u and its neighbours. Small-star: each node u links itself and every neighbour smaller than u to
    the smallest of them. Self-loops are dropped."""
    def undirected(edges):
        neighbours = defaultdict(set)
        for a, b in edges:
            if a != b:
                neighbours[a].add(b)
                neighbours[b].add(a)
        return neighbours

    edges = set(edges)
    for _ in range(rounds):
        edges = {(v, min(ns | {u})) for u, ns in undirected(edges).items() for v in ns if v > u}
        smaller = {u: {v for v in ns if v < u} for u, ns in undirected(edges).items()}
        edges = {(v, min(ns | {u})) for u, ns in smaller.items() if ns for v in ns | {u}}
        edges = {(a, b) for a, b in edges if a != b}
    return edges


def unsettled_after(edges, rounds: int) -> int:
    """Nodes not yet in a star after ``paper_rounds``: the reference for the summary's
    ``unsettled_nodes`` (salts must not change it). In a star forest every node is a centre (no
    smaller neighbour) or a leaf (one neighbour, smaller than it)."""
    neighbours = defaultdict(set)
    for a, b in paper_rounds(edges, rounds):
        neighbours[a].add(b)
        neighbours[b].add(a)
    return sum(not (min(ns) > u or (len(ns) == 1 and min(ns) < u)) for u, ns in neighbours.items())


def run_components(edges, **settings):
    """Labels, sizes and summary of the Beam transform, checked against union-find (labels, sizes,
    largest component) and the paper's rounds (unsettled nodes, converged); returns the largest salted
    neighbourhood one key held."""
    components = {**COMPONENTS, **settings}
    reference = clusters_from_edges(edges)
    p = TestPipeline(argv=IN_PROCESS)
    out = p | beam.Create(edges) | ConnectedComponents(components)
    assert_that(out["labels"], equal_to([(node, rep) for node, (rep, _) in reference.items()]), label="labels")
    assert_that(out["sizes"], equal_to(sorted({rep: size for rep, size in reference.values()}.items())), label="sizes")
    largest = max((size for _, size in reference.values()), default=0)
    unsettled = unsettled_after(edges, components["rounds"])
    assert_that(out["summary"] | beam.Map(lambda s: (s["largest_component"], s["rounds"], s["unsettled_nodes"],
                                                     s["converged"], s["residue_nodes"] > 0)),
                equal_to([(largest, components["rounds"], unsettled, unsettled == 0, unsettled > 0)]), label="summary")
    result = p.run()
    result.wait_until_finish()
    key_sizes = result.metrics().query(MetricsFilter().with_name("star_key_neighbours"))["distributions"]
    return max(d.committed.max for d in key_sizes if d.committed and d.committed.count)


def shuffled_labels(n, seed):
    labels = list(range(n))
    random.Random(seed).shuffle(labels)
    return labels


def test_star_steps_are_the_papers():
    assert sorted(large_star(5, 1, [1, 7, 9])) == [(7, 1), (9, 1)]
    assert sorted(small_star(9, 1, [1, 5, 7])) == [(5, 1), (7, 1), (9, 1)]
    assert sorted(large_star(0, 0, [3, 4])) == [(3, 0), (4, 0)]  # a star is a fixed point
    assert large_star(3, 0, [0]) == [] and small_star(3, 0, [0]) == [(3, 0)]


def hand_made_graphs() -> dict[str, list]:
    path = shuffled_labels(400, 1)
    return {
        "chain": [(i, i + 1) for i in range(12)],
        "star": [(0, i) for i in range(1, 40)],
        "star with a large centre": [(100, i) for i in range(40)],
        "two components": [("a", "b"), ("c", "b"), ("x", "y"), ("z", "y")],
        "long path, shuffled labels": list(zip(path, path[1:])),
    }


def random_graphs() -> dict[str, list]:
    rng = random.Random(7)
    graphs = {}
    for n, m in ((60, 50), (300, 280), (500, 900)):
        edges = [(rng.randrange(n), rng.randrange(n)) for _ in range(m)]
        graphs[f"random {n} nodes {m} edges"] = [(a, b) for a, b in edges if a != b]
    return graphs


@pytest.mark.parametrize("salts", [1, 8])
def test_hand_made_and_random_graphs_equal_union_find(salts):
    # one pipeline: each graph's nodes are tagged with its name, so the graphs stay apart
    graphs = {**hand_made_graphs(), **random_graphs()}
    run_components([((name, a), (name, b)) for name, edges in graphs.items() for a, b in edges], salts=salts)


def test_giant_star_is_spread_over_salted_keys():
    # 3000 documents in one cluster around a middle id: the centre's neighbours are split over 16 keys
    edges = [(i, 1000) for i in range(1000)] + [(1000, 1000 + i) for i in range(1, 2000)]
    assert run_components(edges, salts=16, rounds=3) <= 2 * 3000 // 16  # ~1/16 of the centre's neighbours per key
    assert run_components(edges, salts=1, rounds=3) >= 2999  # unsalted: the centre's whole neighbourhood on one key


def test_too_few_rounds_finish_a_small_residue_and_fail_a_large_one():
    path = [(a, b) for a, b in zip(shuffled_labels(300, 2), shuffled_labels(300, 2)[1:])]
    assert unsettled_after(path, 1) > 0
    run_components(path, rounds=1)  # not a star after one round: the residue is finished on one worker
    with pytest.raises(Exception, match="not converged after 1 rounds"):
        run_components(path, rounds=1, residue_max_edges=10)
