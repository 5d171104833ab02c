"""MinHash near-duplicate documents (datasketch signatures, LSH band keys, deterministic clusters).

Shingles are word n-grams (default 5) of the lower-cased text; signatures use ``num_perm`` (128)
permutations; bands x rows come from datasketch's optimal parameters for the similarity threshold
(0.8 -> 9 x 13). Documents sharing any band key are joined; the connected components are the
clusters and the representative of a cluster is its smallest document id, so the result does not
depend on the order in which documents or band groups arrive.
"""
from __future__ import annotations

import hashlib
import re
import zlib
from operator import methodcaller
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from datasketch import MinHash
from datasketch.hashfunc import sha1_hash32, sha1_hash64
from datasketch.lsh import _optimal_param

_WORD = re.compile(r"\w+", re.UNICODE)


def lsh_bands_rows(threshold: float, num_perm: int, weights: Sequence[float]) -> tuple[int, int]:
    """(bands, rows) minimising weighted false positive/negative probabilities (datasketch's choice)."""
    return _optimal_param(threshold, num_perm, float(weights[0]), float(weights[1]))


def shingles(text: str, ngram: int) -> set[bytes]:
    """Word n-grams of the lower-cased text (UTF-8, words joined by a space); a text shorter than n
    words is one shingle."""
    words = _WORD.findall(text.lower())
    if len(words) <= ngram:
        return {" ".join(words).encode("utf-8")} if words else set()
    encoded = " ".join(words).encode("utf-8").split(b" ")  # words hold no space: one encode for all
    return set(map(b" ".join, zip(*(encoded[i:] for i in range(ngram)))))


def sha1_hashes(values: Iterable[bytes], width: int) -> list[int]:
    """datasketch's ``sha1_hash32`` / ``sha1_hash64`` of each value (the first 4 / 8 bytes of its
    SHA-1, little-endian), the digests joined and read at once instead of one unpack per value."""
    digests = b"".join(map(methodcaller("digest"), map(hashlib.sha1, values)))
    first = np.frombuffer(digests, np.uint8).reshape(-1, 20)[:, :width]
    return np.ascontiguousarray(first).view("<u4" if width == 4 else "<u8").ravel().tolist()


class MinHasher:
    """Computes signatures and band keys with fixed permutations (built once, reused per document)."""

    def __init__(self, config: Mapping[str, Any]):
        self.ngram = int(config["ngram"])
        self.num_perm = int(config["num_perm"])
        self.seed = int(config["seed"])
        self.scheme = str(config["scheme"])
        self.bands, self.rows = lsh_bands_rows(
            float(config["threshold"]), self.num_perm, config["weights"]
        )
        self._template = MinHash(num_perm=self.num_perm, seed=self.seed, scheme=self.scheme)
        self.hash_bytes = 8 if self._template.hashfunc is sha1_hash64 else 4  # datasketch's default for the scheme
        if self._template.hashfunc not in (sha1_hash32, sha1_hash64):
            raise ValueError(f"unexpected datasketch default hash {self._template.hashfunc!r}")

    def signature(self, text: str) -> np.ndarray:
        """datasketch's MinHash of the shingles with its default SHA-1 hash (computed by ``sha1_hashes``
        and handed over as integers: ``hashfunc=int``)."""
        minhash = MinHash(num_perm=self.num_perm, seed=self.seed, scheme=self.scheme,
                          permutations=self._template.permutations, hashfunc=int)
        grams = shingles(text, self.ngram)
        if grams:
            minhash.update_batch(sha1_hashes(grams, self.hash_bytes))
        return minhash.hashvalues

    def band_keys(self, signature: np.ndarray) -> list[str]:
        """One key per band: band index + digest of that band's hash values."""
        keys = []
        for band in range(self.bands):
            chunk = signature[band * self.rows : (band + 1) * self.rows].astype("<u8").tobytes()
            keys.append(f"{band}:{hashlib.blake2b(chunk, digest_size=12).hexdigest()}")
        return keys


# ------------------------------------------------------------ connected components in rounds (Kiveris et al. 2014)
# "Connected Components in MapReduce and Beyond": alternate large-star and small-star steps, each one
# grouping the edges by node; the graph keeps its components and converges to one star per component
# (every node linked to the component's smallest node). The Beam job splits a node's neighbourhood
# over salted keys (``salt_of``) and gives every part the node's exact minimum, so the steps below are
# the paper's, whatever the salts.


def salt_of(node, salts: int) -> int:
    """Stable salt of a node id (the same in every process, unlike ``hash`` of a str)."""
    return zlib.crc32(repr(node).encode()) % salts if salts > 1 else 0


def large_star(node, low, neighbours: Iterable) -> list[tuple]:
    """Large-star at ``node`` (``low`` = smallest of its neighbourhood and itself): every larger
    neighbour -> ``low``."""
    return [(other, low) for other in set(neighbours) if other > node]


def small_star(node, low, smaller: Iterable) -> list[tuple]:
    """Small-star at ``node`` (``low`` = smallest of its smaller neighbours and itself): each smaller
    neighbour and the node -> ``low``."""
    return [(other, low) for other in set(smaller) | {node} if other != low]


ROOT, LEAF, UNSETTLED = "root", "leaf", "unsettled"


def node_status(smaller: Sequence, has_larger: bool, node) -> tuple[str, object]:
    """(kind, parent) of a node from its two smallest distinct smaller neighbours and whether it has a
    larger one: a star forest has only roots (no smaller neighbour) and leaves (exactly one smaller
    neighbour, no larger one); any other node is unsettled (its component is not a star yet)."""
    if not smaller:
        return ROOT, node
    if len(smaller) == 1 and not has_larger:
        return LEAF, smaller[0]
    return UNSETTLED, smaller[0]


def final_label(node, parent, residue_labels: Mapping):
    """Component label (smallest node) of a node after the rounds: the residue's union-find label of
    the node or of its parent, else its parent (a leaf's root or a root itself)."""
    if node in residue_labels:
        return residue_labels[node]
    return residue_labels.get(parent, parent)


def star_edges(doc_ids: Iterable[str]) -> list[tuple[str, str]]:
    """Edges from every member of a band bucket to the bucket's smallest id."""
    ids = sorted(set(doc_ids))
    return [(other, ids[0]) for other in ids[1:]]


class UnionFind:
    """Union-find whose root is always the smallest id of its component."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, node: str) -> str:
        root = node
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while self.parent.get(node, node) != root:
            self.parent[node], node = root, self.parent[node]
        return root

    def union(self, a: str, b: str) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            low, high = sorted((root_a, root_b))
            self.parent[high] = low
            self.parent.setdefault(low, low)

    def labels(self) -> dict:
        """Every joined id -> the smallest id of its component."""
        return {node: self.find(node) for node in self.parent}

    def clusters(self) -> dict[str, tuple[str, int]]:
        """Every joined id -> (representative = smallest id, cluster size)."""
        roots = {node: self.find(node) for node in self.parent}
        sizes: dict[str, int] = {}
        for root in roots.values():
            sizes[root] = sizes.get(root, 0) + 1
        return {node: (root, sizes[root]) for node, root in roots.items()}


def clusters_from_edges(edges: Iterable[tuple[str, str]]) -> dict[str, tuple[str, int]]:
    """Connected components of the edges: id -> (representative, size); ids without edges are absent."""
    union_find = UnionFind()
    for a, b in edges:
        union_find.union(a, b)
    return union_find.clusters()


def cluster_texts(texts: Mapping[str, str], config: Mapping[str, Any]) -> dict[str, tuple[str, int]]:
    """In-memory clustering of a small id -> text mapping (tests, local tools); the Beam job shards it."""
    hasher = MinHasher(config)
    buckets: dict[str, list[str]] = {}
    for doc_id in sorted(texts):
        for key in hasher.band_keys(hasher.signature(texts[doc_id])):
            buckets.setdefault(key, []).append(doc_id)
    edges = [edge for ids in buckets.values() if len(ids) > 1 for edge in star_edges(ids)]
    return clusters_from_edges(edges)

