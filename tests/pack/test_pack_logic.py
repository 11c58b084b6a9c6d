"""The pure parts of pack, on hand-built inputs: the alignment-ratio derangement (mu-VLA App. A Table 6),
negatives taking turns, tag sequences as phrases, region members, and the pack: config section."""

import io
import random
from itertools import pairwise

import numpy as np
import pytest

from pipelines.pack import derangement, hard_negatives, region_members, tag_sequence
from schemas.config import ConfigError, parse_config


def units_of(groups: dict[str, int]) -> list[tuple[str, int]]:
    return [(key, i) for key, n in groups.items() for i in range(n)]


@pytest.mark.parametrize("groups", [
    {f"img-{i}": 5 for i in range(10)},  # COCO-like: five captions an image
    {f"img-{i}": 1 + i % 4 for i in range(13)},
    {"big": 6, **{f"img-{i}": 1 for i in range(7)}},
])
def test_exactly_x_percent_stay_aligned_and_the_rest_carry_another_images_caption(groups):
    units = units_of(groups)
    n = len(units)
    aligned_sets = []
    for percent in range(0, 101, 10):
        donors = derangement(units, percent)
        aligned = {i for i, d in enumerate(donors) if d == i}
        assert len(aligned) == round(n * percent / 100)
        unaligned = [i for i in range(n) if i not in aligned]
        for i in unaligned:
            assert donors[i] is not None and units[donors[i]][0] != units[i][0]
        if len(unaligned) >= 2 * max(sum(1 for i in unaligned if units[i][0] == key) for key in groups):
            assert sorted(donors[i] for i in unaligned) == unaligned  # a derangement of their own texts
        aligned_sets.append(aligned)
    for smaller, larger in pairwise(aligned_sets):
        assert smaller <= larger


def test_the_derangement_is_a_function_of_the_units_not_their_order():
    units = units_of({f"img-{i}": 3 for i in range(8)})
    shuffled = units[:]
    random.Random(1).shuffle(shuffled)
    for percent in (0, 40, 80):
        first = {units[i]: units[d] for i, d in enumerate(derangement(units, percent))}
        second = {shuffled[i]: shuffled[d] for i, d in enumerate(derangement(shuffled, percent))}
        assert first == second


def test_when_the_unaligned_cannot_be_deranged_among_themselves_they_take_other_captions_of_the_shard():
    units = units_of({"big": 4, "a": 2, "b": 2})
    for percent in range(0, 101, 5):
        donors = derangement(units, percent)
        assert sum(d == i for i, d in enumerate(donors)) == round(len(units) * percent / 100)
        assert all(d is not None and units[d][0] != units[i][0] for i, d in enumerate(donors) if d != i)


def test_a_shard_with_one_image_has_no_caption_to_take():
    units = units_of({"only": 5})
    donors = derangement(units, 40)
    assert sum(d == i for i, d in enumerate(donors)) == 2
    assert [d for d in donors if d is None] == [None] * 3
    assert derangement([], 50) == []


def test_negatives_take_turns_between_methods_in_rank_order():
    rows = ([{"method": "scene_graph", "text": f"s{i}", "score": -float(i)} for i in range(5)]
            + [{"method": "tfidf", "text": f"t{i}", "score": 1 - i / 10, "detail": f'{{"key": "k{i}"}}'}
               for i in range(2)])
    assert [n["text"] for n in hard_negatives(rows, 5)] == ["s0", "t0", "s1", "t1", "s2"]
    assert [n["text"] for n in hard_negatives(rows, 100)] == ["s0", "t0", "s1", "t1", "s2", "s3", "s4"]
    assert [n["key"] for n in hard_negatives(rows, 3)] == [None, "k0", None]
    assert hard_negatives(rows, 0) == []


def test_a_tag_sequence_is_the_tag_query_and_each_tag_a_phrase():
    text, phrases = tag_sequence(["dog", "red  ball", "dog", "", "tree"])
    assert text == "dog red ball tree"
    assert [text[p["start"]:p["end"]] for p in phrases] == [p["text"] for p in phrases] == ["dog", "red ball", "tree"]


def test_region_members_are_float16_npy_only_when_every_region_has_them():
    def region(feature, probs):
        return {"box": [0.1, 0.2, 0.5, 0.6], "label": "dog", "score": 0.9, "origin": "detector",
                "feature": feature, "class_probs": probs}

    row = {"width": 640, "height": 480, "regions": [region([1.0, 2.5], [0.25, 0.75]), region([3.0, 4.0], None)]}
    meta, arrays = region_members(row)
    assert meta["has_features"] and not meta["has_probs"]
    assert [name for name, _ in arrays] == ["region_feats.npy"]
    array = np.load(io.BytesIO(arrays[0][1]), allow_pickle=False)
    assert array.dtype == np.float16 and array.tolist() == [[1.0, 2.5], [3.0, 4.0]]
    assert meta["boxes"] == [[0.1, 0.2, 0.5, 0.6]] * 2 and meta["width"] == 640
    empty, none = region_members({"width": 1, "height": 1, "regions": []})
    assert not empty["has_features"] and not empty["has_probs"] and none == []


def _config(pack: dict, weak=()) -> dict:
    return {"output": "out", "sources": {"books": {"kind": "bookcorpus", "root": "b"}},
            "retrieval": {"retrieve": {"weak_pairs": list(weak)}}, "pack": pack}


@pytest.mark.parametrize("pack, message", [
    ({"tasks": ["pairs", "captions"]},
     r"pack.tasks\[1\]: expected pairs \| images .* got 'captions' \(alignment-ratio tasks come from"),
    ({"tasks": ["pairs", "pairs"]}, r"pack.tasks\[1\]: 'pairs' is listed twice"),
    ({"aligned_ratios": [0, 120]}, r"pack.aligned_ratios\[1\]: a percentage in 0..100, got 120"),
    ({"cmcl": {"related_images": -1}}, r"pack.cmcl.related_images: expected a count >= 0"),
    ({"cmcl": {"positives": 0}}, r"pack.cmcl.positives: expected a positive integer"),
    ({"sources": ["coco"]}, r"pack.sources\[0\]: 'coco' is not a source"),
    ({"weak_pairs": ["weak-x"]}, r"pack.weak_pairs\[0\]: 'weak-x' is not a retrieval.retrieve.weak_pairs name"),
    ({"colour": 1}, r"pack.colour: unknown key"),
])
def test_pack_config_errors_name_the_dotted_key(pack, message, tmp_path):
    (tmp_path / "b").mkdir()
    with pytest.raises(ConfigError, match=message):
        parse_config(_config(pack), str(tmp_path))


def test_pack_config_defaults_are_every_task_and_the_papers_ratios(tmp_path):
    (tmp_path / "b").mkdir()
    config = parse_config(_config({}, [{"name": "weak-b", "images": ["books"], "texts": ["books"]}]), str(tmp_path))
    assert config.pack.tasks == ["pairs", "images", "texts", "tag_pairs", "weak_pairs", "cmcl"]
    assert config.pack.aligned_ratios == [0, 20, 40, 60, 80, 100]
    assert (config.pack.cmcl.positives, config.pack.cmcl.negatives, config.pack.cmcl.related_texts) == (None, 100, 100)
    assert config.pack.weak_pairs is None


def test_detect_rows_read_column_wise_equal_the_plain_rows(tmp_path):
    from pipelines.pack import DETECT, read_rows
    from pipelines.raw_shard import write_table
    from pipelines.sidecar_tables import read_table_rows
    from schemas.tables import ANN_DETECT

    def region(i, feature, probs):
        return {"box": [0.0, 0.1, 0.5 + i / 10, 0.9], "label": f"l{i}", "score": 1 - i / 10, "origin": "detector",
                "class_probs": probs, "feature": feature}

    rows = [{"key": "a", "source": "s", "width": 4, "height": 3,
             "regions": [region(0, [1.0, 2.0, 3.0], [0.5, 0.5]), region(1, None, None)]},
            {"key": "b", "source": "s", "width": 4, "height": 3, "regions": []},
            {"key": "c", "source": "s", "width": 5, "height": 6, "regions": [region(2, [4.0, 5.0, 6.0], None)]}]
    path = str(tmp_path / "00000.parquet")
    write_table(path, rows, ANN_DETECT)
    fast, plain = read_rows(path, DETECT), read_table_rows(path)
    assert [r["key"] for r in fast] == ["a", "b", "c"] and [len(r["regions"]) for r in fast] == [2, 0, 1]
    for x_row, y_row in zip(fast, plain, strict=True):
        for x, y in zip(x_row["regions"], y_row["regions"], strict=True):
            assert {k: x[k] for k in ("box", "label", "score", "origin")} == {
                k: y[k] for k in ("box", "label", "score", "origin")
            }
            for name in ("feature", "class_probs"):
                assert (x[name] is None and y[name] is None) or x[name].tolist() == y[name]
    with pytest.raises(ValueError, match="annotate detect"):
        read_rows(str(tmp_path / "00001.parquet"), DETECT)
