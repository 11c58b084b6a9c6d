"""The demo's report in headless Chromium (Debian's binary driven by Playwright): what it shows (totals,
indexes with recall, boxes drawn, histograms, rewrites, strongest and weakest weak pairs, related texts
with their captions) and where the browser lays it out (bars inside their cards and as long as their
counts, nothing wider than the window), from element bounding boxes and a full-page screenshot."""

import json
import os

import pytest

from tests.retrieval.test_page import CHROMIUM, FLAGS

WIDTH = 1280


@pytest.fixture(scope="module")
def page(demo, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    config, _ = demo
    profile = tmp_path_factory.mktemp("report-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": WIDTH, "height": 900})
        try:
            page = context.new_page()
            page.goto(f"file://{config.output}/report/index.html")
            page.wait_for_function("() => [...document.images].every((img) => img.complete)")
            yield page
        finally:
            context.close()


def _box(element) -> dict:
    box = element.bounding_box()
    assert box is not None
    return box


def _inside(inner: dict, outer: dict, slack: float = 0.5) -> bool:
    return (inner["x"] >= outer["x"] - slack and inner["y"] >= outer["y"] - slack
            and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + slack
            and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + slack)


def test_headline_totals_and_index_table_match_the_corpus(demo, page):
    config, _ = demo
    manifest = json.loads(open(f"{config.output}/corpus.json").read())["stages"]
    totals = dict(
        zip(
            page.locator("#totals .tile .muted").all_inner_texts(),
            (int(t.replace(",", "")) for t in page.locator("#totals .tile .big").all_inner_texts()),
            strict=True,
        )
    )
    ingested = sum(e["counts"]["written"] for e in manifest["ingest"].values())
    removed = sum(e["counts"]["removed"] for e in manifest["clean"].values())
    assert totals["samples ingested"] == ingested and totals["removed by clean"] == removed > 0
    assert totals["samples kept"] == ingested - removed
    assert "made 20" in page.inner_text("body")
    rows = page.locator("#indexes tr").all_inner_texts()[1:]
    builds = {f"{space}/{source}": json.loads(open(f"{config.output}/index/{space}/{source}/build.json").read())
              for space in ("text", "tags") for source in config.sources
              if os.path.exists(f"{config.output}/index/{space}/{source}/build.json")}
    assert len(rows) == len(builds) > 0
    for row in rows:
        name, vectors, *_ = row.split("\t")
        assert int(vectors.replace(",", "")) == builds[name]["vectors"]
        assert f"{builds[name]['recall']:.3f} @{builds[name]['recall_k']}" in row
    assert totals["vectors indexed"] == sum(b["vectors"] for b in builds.values())


def test_tag_bars_stay_in_their_cards_and_grow_with_their_counts(page):
    cards = page.locator("#tags .card")
    assert cards.count() >= 8
    for i in range(cards.count()):
        card = cards.nth(i)
        outer = _box(card)
        bars = card.locator(".bar")
        lengths, counts = [], []
        for j in range(bars.count()):
            bar = bars.nth(j)
            for part in (bar, bar.locator(".n"), bar.locator(".label")):
                assert _inside(_box(part), outer), (card.locator("h3").inner_text(), j)
            fills = bar.locator(".fill")
            ends = [_box(fills.nth(f)) for f in range(fills.count())]
            assert all(_inside(end, outer) for end in ends)
            lengths.append(sum(end["width"] for end in ends))
            counts.append(int(bar.locator(".n").inner_text()))
        widest = lengths[0]
        for length, count in zip(lengths, counts, strict=True):  # proportional: 119 and 108 do not end at the same x
            assert abs(length - widest * count / counts[0]) <= 1.5


def test_boxes_histograms_rewrites_and_weak_pair_extremes_are_shown(page):
    drawn = page.locator("#boxes .card")
    assert drawn.count() >= 3
    for i in range(drawn.count()):
        svg = drawn.nth(i).locator("svg")
        frame, rects = _box(svg), svg.locator("g rect")
        assert rects.count() >= 1 and svg.locator("g text").count() == rects.count()
        assert all(_inside(_box(rects.nth(r)), frame, slack=2) for r in range(rects.count()))
        assert svg.locator("image").get_attribute("href").startswith("data:image/jpeg;base64,")
    titles = page.locator("#histograms h3").all_inner_texts()
    assert {"weak pairs weak-cc", "detector boxes", "related images", "related texts"} <= set(titles)
    assert all(page.locator("#histograms svg").nth(i).locator("rect").count() >= 2 for i in range(len(titles)))
    rewrites = page.locator("#rewrites .card")
    assert rewrites.count() >= 1
    first = rewrites.first.inner_text()
    assert "back_translation (paraphrases)" in first and "(hard negatives)" in first
    assert len(set(page.locator("#rewrites .key").all_inner_texts())) == rewrites.count()  # different images
    sides = page.locator(".sides").first
    strongest, weakest = (sides.locator(".column").nth(i) for i in (0, 1))
    high = [float(s) for s in strongest.locator(".score").all_inner_texts()]
    low = [float(s) for s in weakest.locator(".score").all_inner_texts()]
    assert high and low and min(high) >= max(low) and high == sorted(high, reverse=True)
    left, right = _box(strongest), _box(weakest)
    assert left["x"] + left["width"] <= right["x"] and abs(left["y"] - right["y"]) < 1  # side by side


def test_related_text_cards_show_the_caption(demo, page):
    heading = page.locator("h2", has_text="Related texts")
    cards = heading.locator("xpath=following-sibling::div[1]").locator(".card")
    assert cards.count() >= 3
    for i in range(cards.count()):
        assert cards.nth(i).locator(".caption").inner_text().strip()


def test_the_page_fits_the_window_and_its_screenshot_is_the_layout(page, tmp_path):
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH
    path = tmp_path / "report.png"
    page.screenshot(path=str(path), full_page=True)
    from PIL import Image

    with Image.open(path) as shot:
        height = page.evaluate("document.documentElement.scrollHeight")
        assert shot.size == (WIDTH, height)
        totals = _box(page.locator("#totals"))  # the tiles are drawn where the layout says: not blank
        crop = shot.convert("L").crop((int(totals["x"]), int(totals["y"]), int(totals["x"] + totals["width"]),
                                       int(totals["y"] + totals["height"])))
        assert crop.getextrema()[0] < 100  # dark digits on white
