import random

import numpy as np
import pytest

from pipelines import dedup
from pipelines.dedup import (
    Duplicate,
    Item,
    band_masks,
    band_pairs,
    find_duplicates,
    hamming_pairs,
    link_codes,
    normalise_text,
    parse_phash,
)


def _item(key, modality="pair", sha=None, phash=None, text="a caption", position=0):
    if isinstance(phash, int):
        phash = f"{phash:016x}"
    text = None if modality == "image" else text
    return Item(key, key.split("-")[0], modality, sha, phash, text, (position, key))


def _flip(value: int, *bits: int) -> int:
    for bit in bits:
        value ^= 1 << bit
    return value


BASE = 0x0123_4567_89AB_CDEF


def test_exact_image_duplicates_keep_the_smallest_rank():
    items = [
        _item("cc-1", sha="s1", phash=BASE, position=2),
        _item("coco-1", sha="s1", phash=BASE, position=0),
        _item("sbu-1", "image", sha="s1", phash=BASE, position=1),
        _item("cc-2", sha="s2", phash=~BASE & (2**64 - 1), position=2),
    ]
    assert find_duplicates(items) == [
        Duplicate("cc-1", "coco-1", "exact_image", 0),
        Duplicate("sbu-1", "coco-1", "exact_image", 0),
    ]


def test_a_pair_with_another_caption_is_still_an_image_duplicate():
    items = [_item("a-1", sha="s", text="a dog"), _item("b-1", sha="s", text="a cat on a mat", position=1)]
    assert find_duplicates(items) == [Duplicate("b-1", "a-1", "exact_image", 0)]


def test_near_duplicates_within_the_distance():
    items = [
        _item("a-1", sha="s1", phash=BASE),
        _item("b-1", sha="s2", phash=_flip(BASE, 0, 17, 63), position=1),  # distance 3
        _item("b-2", sha="s3", phash=_flip(BASE, 1, 2, 3, 4, 5), position=1),  # distance 5: kept
        _item("b-3", sha="s4", phash=BASE, position=1),  # same pHash, other bytes
    ]
    assert find_duplicates(items, max_distance=4) == [
        Duplicate("b-1", "a-1", "near_image", 3),
        Duplicate("b-3", "a-1", "near_image", 0),
    ]
    assert [d.key for d in find_duplicates(items, max_distance=5)] == ["b-1", "b-2", "b-3"]
    assert [d.key for d in find_duplicates(items, max_distance=0)] == ["b-3"]


def test_chains_make_one_cluster_with_one_kept_item():
    a, b, c = BASE, _flip(BASE, 1, 2, 3), _flip(BASE, 1, 2, 3, 10, 20, 30)  # a~b, b~c, a-c = 6
    items = [_item("x-c", sha="c", phash=c), _item("x-b", sha="b", phash=b), _item("x-a", sha="a", phash=a)]
    # distance is to the kept item, so beyond max_distance for the far end of the chain
    assert find_duplicates(items) == [
        Duplicate("x-b", "x-a", "near_image", 3),
        Duplicate("x-c", "x-a", "near_image", 6),
    ]
    middle_first = [_item("x-a", sha="a", phash=a, position=1), _item("x-b", sha="b", phash=b),
                    _item("x-c", sha="c", phash=c, position=1)]
    assert find_duplicates(middle_first) == [
        Duplicate("x-a", "x-b", "near_image", 3),
        Duplicate("x-c", "x-b", "near_image", 3),
    ]


def test_sha_and_phash_links_chain_and_an_item_without_phash_takes_its_copy_s():
    items = [
        _item("a-1", sha="s1", phash=BASE),
        _item("b-1", sha="s2", phash=_flip(BASE, 5, 6), position=1),
        _item("b-2", sha="s2", phash=None, position=1),  # no pHash: linked by its bytes only
        _item("b-3", sha=None, phash=_flip(BASE, 7), position=1),  # no sha256: linked by pHash only
    ]
    assert find_duplicates(items) == [
        Duplicate("b-1", "a-1", "near_image", 2),
        Duplicate("b-2", "a-1", "near_image", 2),
        Duplicate("b-3", "a-1", "near_image", 1),
    ]


def test_text_duplicates_only_among_text_samples():
    assert normalise_text("  Hello\t\n  WORLD ") == "hello world"
    items = [
        _item("wiki-1", "text", text="The  Cat sat.\n", position=1),
        _item("book-1", "text", text="the cat SAT."),
        _item("book-2", "text", text="the cat sat"),
        _item("cc-1", sha="s", phash=BASE, text="the cat sat."),  # a pair: image dedup only
        _item("cc-2", sha="t", phash=~BASE & (2**64 - 1), text="the cat sat."),
        _item("book-3", "text", text="   "),
    ]
    assert find_duplicates(items) == [Duplicate("wiki-1", "book-1", "exact_text", 0)]


def test_text_samples_do_not_take_part_in_image_dedup():
    items = [_item("a-1", "text", sha="s", phash=BASE, text="x"), _item("b-1", sha="s", phash=BASE, text="y")]
    assert find_duplicates(items) == []


def test_bad_input_is_an_error():
    with pytest.raises(ValueError, match="given twice"):
        find_duplicates([_item("a-1", sha="s"), _item("a-1", sha="t")])
    with pytest.raises(ValueError, match="a-1: phash"):
        find_duplicates([_item("a-1", phash="xyz")])
    with pytest.raises(ValueError, match="16 hex"):
        parse_phash("0123")
    with pytest.raises(ValueError, match="modality"):
        find_duplicates([Item("a-1", "a", "video", None, None, None, (0,))])


def _planted(n_clusters=300, seed=0):
    rng = random.Random(seed)
    items = []
    for c in range(n_clusters):
        base = rng.getrandbits(64)
        for m in range(rng.randint(1, 4)):
            bits = rng.sample(range(64), rng.randint(0, 3)) if m else []
            sha = f"sha{c}-{m}" if rng.random() < 0.8 else f"sha{c}-0"
            key = f"s{rng.randint(0, 3)}-{c}-{m}"
            items.append(_item(key, rng.choice(["pair", "image"]), sha, _flip(base, *bits), position=int(key[1])))
        for m in range(rng.randint(0, 2)):
            items.append(_item(f"t{m}-{c}", "text", text=f"Sentence  {c}" if m else f"sentence {c}", position=m))
    return items


def test_output_is_deterministic_under_input_shuffles():
    items = _planted()
    expected = find_duplicates(items)
    assert expected and expected == sorted(expected, key=lambda d: d.key)
    kept = {d.duplicate_of for d in expected}
    assert not kept & {d.key for d in expected}  # a kept item is never itself a duplicate
    for seed in range(3):
        shuffled = items[:]
        random.Random(seed).shuffle(shuffled)
        assert find_duplicates(shuffled) == expected


def _brute(a, d, b=None):
    other = a if b is None else b
    dist = np.bitwise_count(a[:, None] ^ other[None, :])
    hit = dist <= d
    if b is None:
        hit &= np.triu(np.ones_like(hit), 1)
    i, j = np.nonzero(hit)
    return i, j, dist[i, j]


def _clustered_hashes(rng, n_bases, copies, max_flips, biased=False):
    if biased:  # few ones per hash: blocks share band values and must be blocked again
        bases = [sum(1 << int(b) for b in rng.choice(64, 8, replace=False)) for _ in range(n_bases)]
    else:
        bases = [int(x) for x in rng.integers(0, 2**63, n_bases)]
    values = {_flip(base, *map(int, rng.choice(64, rng.integers(0, max_flips + 1), replace=False)))
              for base in bases for _ in range(copies)}
    return np.array(sorted(values), np.uint64)


@pytest.mark.parametrize("biased", [False, True])
@pytest.mark.parametrize("d", [0, 1, 3, 4, 6])
def test_blocked_search_finds_every_pair_within_the_distance(monkeypatch, biased, d):
    monkeypatch.setattr(dedup, "LEAF_SIZE", 8)  # force re-blocking of large blocks
    rng = np.random.default_rng(d)
    values = _clustered_hashes(rng, 150, 6, 6, biased)
    values = np.concatenate([values, values[:10]])  # repeated values are allowed (compared pairwise)
    got = hamming_pairs(values, d)
    expected = _brute(values, d)
    assert len(expected[0]) > 0
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("biased", [False, True])
def test_blocked_search_between_two_sets(monkeypatch, biased):
    monkeypatch.setattr(dedup, "LEAF_SIZE", 8)
    rng = np.random.default_rng(7)
    values = _clustered_hashes(rng, 200, 4, 5, biased)
    pick = rng.random(len(values)) < 0.3
    a, b = values[~pick], np.concatenate([values[pick], values[~pick][:5]])  # 5 values on both sides
    got = hamming_pairs(a, 4, b)
    expected = _brute(a, 4, b)
    order = np.lexsort((expected[1], expected[0]))
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g, e[order])


def test_blocked_search_edge_cases():
    empty = np.zeros(0, np.uint64)
    assert all(len(x) == 0 for x in hamming_pairs(empty, 4))
    assert all(len(x) == 0 for x in hamming_pairs(np.array([5], np.uint64), 4, empty))
    i, j, dist = hamming_pairs(np.array([0, 1, 3, 2**64 - 1], np.uint64), 64)
    assert len(i) == 6
    with pytest.raises(ValueError):
        hamming_pairs(empty, -1)


def test_fifty_thousand_random_hashes_with_planted_near_duplicates():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**64 - 1, 50_000, dtype=np.uint64, endpoint=True)
    items = [Item(f"a-{k:05d}", "a", "pair", f"a{k}", f"{int(h):016x}", "c", (0, f"a-{k:05d}"))
             for k, h in enumerate(hashes)]
    planted = {}
    for k in range(0, 50_000, 100):
        bits = rng.choice(64, rng.integers(1, 5), replace=False)
        items.append(Item(f"b-{k:05d}", "b", "image", f"b{k}", f"{_flip(int(hashes[k]), *map(int, bits)):016x}",
                          None, (1, f"b-{k:05d}")))
        planted[f"b-{k:05d}"] = (f"a-{k:05d}", len(bits))
    dups = find_duplicates(items)
    assert {d.key: (d.duplicate_of, d.distance) for d in dups} == planted


@pytest.mark.parametrize("d", [1, 2, 4, 7])
def test_band_groups_find_every_near_pair_exactly_once(d):
    """What the Beam clean does: group hashes by each fixed band's value, search each group."""
    rng = np.random.default_rng(d + 10)
    values = _clustered_hashes(rng, 120, 5, d + 2)
    masks = band_masks(d)
    assert len(masks) == d + 1 and sum(masks) == 2**64 - 1  # disjoint bands covering every bit
    assert all(a & b == 0 for k, a in enumerate(masks) for b in masks[k + 1:])
    found = []
    for band, mask in enumerate(masks):
        groups: dict[int, list[int]] = {}
        for position, value in enumerate(values.tolist()):
            groups.setdefault(value & mask, []).append(position)
        for members in groups.values():
            i, j = band_pairs(values[members], band, masks, d)
            found += [(members[a], members[b]) for a, b in zip(i.tolist(), j.tolist(), strict=True)]
    i, j, _ = _brute(values, d)
    assert len(found) == len(set(found)) and sorted(found) == sorted(zip(i.tolist(), j.tolist(), strict=True))
    assert len(found) > 0


def test_link_codes_say_which_dedup_a_sample_takes_part_in():
    pair = link_codes(_item("a-1", sha="s", phash=BASE))
    assert pair == (b"s", BASE, None)
    assert link_codes(_item("a-2", "image", sha=None, phash=None)) == (None, None, None)
    text = link_codes(_item("a-3", "text", sha="s", phash=BASE, text=" The  cat "))
    assert text.sha256 is None and text.phash is None
    assert text.text == link_codes(_item("a-4", "text", text="the cat")).text
    assert link_codes(_item("a-5", "text", text="  ")) == (None, None, None)
