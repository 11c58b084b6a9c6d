"""The card benchmark at a tiny size: every way of writing the card gives the same bytes, and each is timed."""

from benchmarks import card


def test_every_way_of_writing_the_card_gives_the_same_card():
    result = card.main(["--samples", "60", "--sources", "2", "--shards", "3", "--repeat", "1"])
    assert result["same_card"] and result["samples"] == 120 and result["shards"] == 6
    assert set(result["seconds"]) == {"columns", "footers", "kept", "rerun of one source"}
    assert all(value > 0 for value in result["seconds"].values()) and result["vs_columns"]["columns"] == 1.0
    assert result["shard_writers_shape_us_per_sample"] > 0
