"""Deduplication across sources (UNITER §3.3: a pre-training image should enter the corpus once).

Three kinds of duplicate, each decided on the columns of the shard index (``schemas/tables.py``):

- ``exact_image``: pair and image samples with the same ``sha256`` of the stored image bytes;
- ``near_image``: pair and image samples whose 64-bit pHashes (``pipelines.images.perceptual_hash``)
  are within ``max_distance`` bits; re-encoded, resized or re-hosted copies of one photo;
- ``exact_text``: text samples whose text is equal after normalisation (strip, collapse whitespace,
  casefold).

Pairs are deduplicated by their image: the same image under another caption is still a duplicate, so
every image enters the corpus once (the kept sample keeps its own caption; COCO-style multi-caption
samples already carry all their captions in ``meta``). Text samples take part in text dedup only, pair
and image samples in image dedup only.

Links make clusters by union-find, so chains (A~B, B~C with A, C further apart) resolve to one cluster
with ONE kept item: the one with the smallest ``(rank, key)``. Every other member is reported as a
``Duplicate`` of it; its ``distance`` is the Hamming distance of its pHash to the KEPT item's pHash
(0 for exact duplicates), which for a chained member can exceed ``max_distance``.

Near duplicates are searched by multi-index hashing (Norouzi et al., "Fast search in Hamming space with
multi-index hashing", CVPR 2012): two hashes within distance d agree exactly on at least one of d+1
disjoint bands of their bits (pigeonhole), so only hashes sharing a band value are compared. A block
too large to compare pairwise is blocked again on the bits that still vary inside it (the same
pigeonhole argument holds for them), so the search stays exact and no block is ever skipped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

LEAF_SIZE = 256  # blocks up to this many hashes are compared pairwise
_CELLS = 1 << 22  # hash comparisons per vectorised step (bounds temporary memory to a few tens of MiB)
_MAX_DEPTH = 24  # re-blocking depth after which a block is compared pairwise whatever its size
_IMAGE_MODALITIES = ("pair", "image")


@dataclass(frozen=True)
class Item:
    """One sample as the index tables describe it."""

    key: str
    source: str
    modality: str  # pair | image | text
    sha256: str | None
    phash: str | None
    text: str | None
    rank: tuple  # the item with the smallest (rank, key) of a cluster is kept


@dataclass(frozen=True)
class Duplicate:
    key: str  # the dropped sample
    duplicate_of: str  # the kept sample's key
    kind: str  # exact_image | near_image | exact_text
    distance: int  # pHash Hamming distance to the kept sample (0 for exact)


def parse_phash(value: str, where: str = "phash") -> int:
    """A pHash as ``perceptual_hash`` writes it (16 hex digits) -> its 64-bit integer."""
    if not isinstance(value, str) or len(value) != 16:
        raise ValueError(f"{where}: pHash must be 16 hex digits, got {value!r}")
    try:
        return int(value, 16)
    except ValueError:
        raise ValueError(f"{where}: pHash must be 16 hex digits, got {value!r}") from None


def normalise_text(text: str) -> str:
    """Text as exact text dedup compares it: stripped, whitespace runs collapsed to one space, casefolded."""
    return " ".join(text.split()).casefold()


class LinkCodes(NamedTuple):
    """What can link an item to others; None where it does not apply."""

    sha256: bytes | None  # pair and image samples with a sha256
    phash: int | None  # pair and image samples with a pHash
    text: bytes | None  # text samples with a non-blank text: digest of the normalised text


def link_codes(item: Item) -> LinkCodes:
    """Which codes of ``item`` take part in which kind of dedup (module doc: pairs and images by their
    image only, text samples by their text only)."""
    if item.modality in _IMAGE_MODALITIES:
        return LinkCodes(item.sha256.encode() if item.sha256 else None,
                         parse_phash(item.phash, f"{item.key}: phash") if item.phash else None, None)
    if item.modality == "text":
        blank = item.text is None or not item.text.strip()
        digest = None if blank else hashlib.blake2b(normalise_text(item.text).encode(), digest_size=16).digest()
        return LinkCodes(None, None, digest)
    raise ValueError(f"{item.key}: unknown modality {item.modality!r}")


# --- blocked Hamming search (shared with pipelines.evalsets) -------------------------------------------


def hamming_pairs(
    a: np.ndarray, max_distance: int, b: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs of 64-bit hashes within ``max_distance`` bits, by multi-index hashing (see module doc).

    Without ``b``: pairs ``i < j`` of ``a``. With ``b``: pairs ``(i, j)`` of ``a[i]`` and ``b[j]``.
    Returns ``(i, j, distance)`` as int64 arrays, sorted and without repeats. The search is exact.
    Pass distinct values on each side: many copies of one value are compared pairwise.
    """
    if max_distance < 0:
        raise ValueError(f"max_distance must be >= 0, got {max_distance}")
    a = np.ascontiguousarray(a, dtype=np.uint64)
    if b is None:
        values, side = a, None
    else:
        b = np.ascontiguousarray(b, dtype=np.uint64)
        values = np.concatenate([a, b])
        side = np.concatenate([np.zeros(len(a), bool), np.ones(len(b), bool)])
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    if len(values) >= 2:
        _search(values, side, np.arange(len(values)), _ALL_BITS, max_distance, 0, (), found)
    if not found:
        empty = np.zeros(0, np.int64)
        return empty, empty.copy(), empty.copy()
    i, j, dist = (np.concatenate(parts) for parts in zip(*found, strict=True))
    i, j = np.minimum(i, j), np.maximum(i, j)  # i on side a, j on side b (a comes first in values)
    order = np.lexsort((j, i))
    i, j, dist = i[order], j[order], dist[order]
    if b is not None:
        j = j - len(a)
    return i.astype(np.int64), j.astype(np.int64), dist.astype(np.int64)


_ALL_BITS = (1 << 64) - 1


def _search(h, side, idx, free: int, d: int, depth: int, exclude: tuple[int, ...], found) -> None:
    """Pairs within ``d`` among ``h[idx]``, hashes that agree on every bit outside ``free``.

    A pair is reported only in the first band it agrees on: ``exclude`` holds the bands (of this level
    and the levels above) that a pair must NOT agree on, so every pair comes out exactly once.
    """
    if side is not None and side[idx].all() == side[idx].any():
        return  # all on one side: no pair between the two sets here
    block = h[idx]
    varying = int(np.bitwise_or.reduce(block) ^ np.bitwise_and.reduce(block))
    free &= varying  # bits equal across the block cannot tell its members apart
    bits = [k for k in range(64) if free >> k & 1]
    if len(idx) <= LEAF_SIZE or len(bits) <= d or depth >= _MAX_DEPTH:
        _compare_block(h, side, idx, d, exclude, found)
        return
    for band in np.array_split(np.array(bits), d + 1):
        mask = sum(1 << int(k) for k in band)
        values = block & np.uint64(mask)
        order = np.argsort(values, kind="stable")
        values, members = values[order], idx[order]
        starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
        sizes = np.diff(np.r_[starts, len(values)])
        small = (sizes >= 2) & (sizes <= LEAF_SIZE)
        _compare_groups(h, side, members, starts[small], sizes[small], d, exclude, found)
        for start, size in zip(starts[sizes > LEAF_SIZE], sizes[sizes > LEAF_SIZE], strict=True):
            _search(h, side, members[start : start + size], free & ~mask, d, depth + 1, exclude, found)
        exclude = (*exclude, mask)


def _compare_groups(h, side, members, starts, sizes, d: int, exclude, found) -> None:
    """Every pair inside each group ``members[start:start+size]``, groups of one size at a time."""
    for size in np.unique(sizes):
        size = int(size)
        upper = np.triu(np.ones((size, size), bool), 1)
        group_starts = starts[sizes == size]
        step = max(1, _CELLS // (size * size))
        for k in range(0, len(group_starts), step):
            index = group_starts[k : k + step, None] + np.arange(size)
            ids = members[index]  # (groups, size)
            hashes = h[ids]
            dist = np.bitwise_count(hashes[:, :, None] ^ hashes[:, None, :])
            hit = (dist <= d) & upper
            if side is not None:
                s = side[ids]
                hit &= s[:, :, None] != s[:, None, :]
            g, r, c = np.nonzero(hit)
            _report(ids[g, r], ids[g, c], dist[g, r, c], h, exclude, found)


def _compare_block(h, side, idx, d: int, exclude, found) -> None:
    """Every pair inside one block of any size, a band of rows at a time."""
    hashes = h[idx]
    sides = None if side is None else side[idx]
    n = len(idx)
    rows = max(1, _CELLS // max(n, 1))
    for start in range(0, n - 1, rows):
        stop = min(n, start + rows)
        dist = np.bitwise_count(hashes[start:stop, None] ^ hashes[None, :])
        hit = (dist <= d) & (np.arange(n)[None, :] > np.arange(start, stop)[:, None])
        if side is not None:
            hit &= sides[start:stop, None] != sides[None, :]
        r, c = np.nonzero(hit)
        _report(idx[start + r], idx[c], dist[r, c], h, exclude, found)


def _report(i, j, dist, h, exclude, found) -> None:
    """Keep the pairs that agree on none of the ``exclude`` bands (they are reported there)."""
    if len(i) and exclude:
        x = h[i] ^ h[j]
        keep = np.ones(len(i), bool)
        for mask in exclude:
            keep &= (x & np.uint64(mask)) != 0
        i, j, dist = i[keep], j[keep], dist[keep]
    if len(i):
        found.append((i, j, dist.astype(np.int64)))


def band_masks(max_distance: int) -> list[int]:
    """``max_distance + 1`` disjoint bands covering the 64 bits: two hashes within ``max_distance`` bits
    agree exactly on at least one of them (pigeonhole; module doc)."""
    return [sum(1 << int(k) for k in band) for band in np.array_split(np.arange(64), max_distance + 1)]


def band_pairs(values: np.ndarray, band: int, masks: list[int], max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(i, j)`` of the distinct ``values`` that share band ``band`` (``masks[band]``) within
    ``max_distance`` bits, less those agreeing on an earlier band: over all band groups every pair
    comes out exactly once, in the group of the first band it agrees on."""
    values = np.asarray(values, np.uint64)
    i, j, _ = hamming_pairs(values, max_distance)
    differ = values[i] ^ values[j]
    first = np.ones(len(i), bool)
    for mask in masks[:band]:
        first &= (differ & np.uint64(mask)) != 0
    return i[first], j[first]


# --- clustering ---------------------------------------------------------------------------------------


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while x != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    def union(self, x: int, y: int) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            self.parent[max(rx, ry)] = min(rx, ry)
            self.parent.setdefault(min(rx, ry), min(rx, ry))  # every linked item is a key of parent


def _link_equal(codes: np.ndarray, members: np.ndarray, uf: _UnionFind) -> None:
    """Union the items ``members`` that share a code (an exact-duplicate group)."""
    if len(codes) < 2:
        return
    _, first, inverse, counts = np.unique(codes, return_index=True, return_inverse=True, return_counts=True)
    repeated = counts[inverse] > 1
    for item, rep in zip(members[repeated].tolist(), members[first[inverse[repeated]]].tolist(), strict=True):
        uf.union(item, rep)


def find_duplicates(items: Iterable[Item], max_distance: int = 4) -> list[Duplicate]:
    """Exact image, near image and exact text duplicates across sources; one ``Duplicate`` per dropped
    sample, sorted by key (UNITER §3.3; see the module doc for what is kept and what ``distance`` is)."""
    keys: list[str] = []
    ranks: list[tuple] = []
    image_items: list[int] = []  # items with a sha256 (pair/image)
    shas: list[bytes] = []
    hashed_items: list[int] = []  # items with a pHash (pair/image)
    phashes: list[int] = []
    text_items: list[int] = []
    digests: list[bytes] = []
    seen: set[str] = set()
    for item in items:
        if item.key in seen:
            raise ValueError(f"find_duplicates: key {item.key!r} given twice")
        seen.add(item.key)
        n = len(keys)
        keys.append(item.key)
        ranks.append(item.rank)
        codes = link_codes(item)
        if codes.sha256 is not None:
            image_items.append(n)
            shas.append(codes.sha256)
        if codes.phash is not None:
            hashed_items.append(n)
            phashes.append(codes.phash)
        if codes.text is not None:
            text_items.append(n)
            digests.append(codes.text)
    del seen

    uf = _UnionFind()
    _link_equal(np.array(shas, dtype="S64"), np.array(image_items, np.int64), uf)
    _link_equal(np.array(digests, dtype="S16"), np.array(text_items, np.int64), uf)
    hashed = np.array(hashed_items, np.int64)
    hash_values = np.array(phashes, np.uint64)
    _link_equal(hash_values, hashed, uf)  # equal pHash: distance 0
    distinct, first = np.unique(hash_values, return_index=True)
    i, j, _ = hamming_pairs(distinct, max_distance)
    for x, y in zip(hashed[first[i]].tolist(), hashed[first[j]].tolist(), strict=True):
        uf.union(x, y)

    clusters: dict[int, list[int]] = {}
    for x in list(uf.parent):
        clusters.setdefault(uf.find(x), []).append(x)
    sha_of = dict(zip(image_items, shas, strict=True))
    phash_of = dict(zip(hashed_items, phashes, strict=True))
    text_set = set(text_items)
    duplicates = []
    for members in clusters.values():
        kept = min(members, key=lambda m: (ranks[m], keys[m]))
        # an item without a pHash can only be linked by sha256: it takes the pHash of its sha group
        group_phash = {sha_of[m]: phash_of[m] for m in sorted(members) if m in phash_of and m in sha_of}
        kept_phash = phash_of.get(kept, group_phash.get(sha_of.get(kept)))
        for m in members:
            if m == kept:
                continue
            if m in text_set:
                kind, distance = "exact_text", 0
            elif m in sha_of and sha_of[m] == sha_of.get(kept):
                kind, distance = "exact_image", 0
            else:
                phash = phash_of.get(m, group_phash.get(sha_of.get(m)))
                kind, distance = "near_image", (phash ^ kept_phash).bit_count()
            duplicates.append(Duplicate(keys[m], keys[kept], kind, distance))
    duplicates.sort(key=lambda dup: dup.key)
    return duplicates
