"""The rewrite benchmark's growth mode (``--sizes``) at tiny sizes: the postings' negatives are the scan's
(recall 1.0 without a cap), a cap is measured against them, and the exponents are written."""

import json
import math

from benchmarks import rewrite


def test_growth_compares_the_postings_with_the_scan_they_replace(tmp_path):
    out = tmp_path / "negatives.json"
    rewrite.main(["--sizes", "400", "800", "--queries", "40", "--shard-size", "200", "--caps", "none", "3",
                  "--segment-entries", "3000", "--repeat", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["sizes"] == [400, 800] and [run["shards"] for run in result["runs"]] == [2, 4]
    for run in result["runs"]:
        assert run["queries"] == 40
        recall = run["recall@100"]
        assert set(recall) == {"postings (exact)", rewrite.ONE_SEGMENT, "postings (cap 3)"}
        assert recall["postings (exact)"] == recall[rewrite.ONE_SEGMENT] == 1.0
        assert run["segments"][rewrite.ONE_SEGMENT] == run["segments"]["postings (cap 3)"] == 1
        assert run["segments"]["postings (exact)"] > 1
        assert all(peak > 0 for peak in run["peak_mb"].values())
        assert 0 < recall["postings (cap 3)"] < 1  # a cap of 3 captions per term loses negatives
        assert all(rate > 0 for rate in run["captions_per_s"].values())
    for exponents in result["per_caption_exponent"], result["peak_memory_exponent"]:
        assert set(exponents) == {"scan of every collection shard", "postings (exact)", rewrite.ONE_SEGMENT,
                                  "postings (cap 3)"}
        assert all(math.isfinite(value) for value in exponents.values())
