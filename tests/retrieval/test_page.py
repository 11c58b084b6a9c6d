"""The search page in headless Chromium (Debian's binary driven by Playwright), against a real service on
127.0.0.1: type a query, see scored rows with loaded thumbnails, open a result and its related images; the
query in the URL (shared links, the back button), boxes on the sample image, search by an image, the grid
view, a 420-px-wide screen and the favicon."""

import threading

import pytest

from pipelines.minicorpus import served
from retrieval.query import QueryEngine
from retrieval.service import Service, make_server

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def base_url(ingested, tmp_path_factory):
    config, embedder = served.build(ingested[0], str(tmp_path_factory.getbasetemp() / "served"))
    server = make_server(Service(QueryEngine(config, embedder=embedder)), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.port}/"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def _browser(tmp_path, **options):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS, **options)
        try:
            yield context.new_page()
        finally:
            context.close()


@pytest.fixture
def page(tmp_path):
    yield from _browser(tmp_path)


@pytest.fixture
def phone(tmp_path):
    """A 420-px-wide screen."""
    yield from _browser(tmp_path, viewport={"width": 420, "height": 860}, device_scale_factor=1)


def open_page(page, url):
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", state="attached")


def result_keys(page):
    return [row.get_attribute("data-key") for row in page.locator(".result").all()]


def images_loaded(page, selector):
    page.wait_for_function("""(selector) => {
        const images = [...document.querySelectorAll(selector)];
        return images.length > 0 && images.every((img) => img.complete && img.naturalWidth > 0);
    }""", arg=selector)


def test_query_shows_scored_results_with_thumbnails_and_related_items(base_url, page, tmp_path):
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(base_url)
    page.wait_for_selector("#index option[value='text/coco']", state="attached")
    page.fill("#query", "a red ball on the grass")
    page.fill("#k", "4")
    page.click("#go")
    page.wait_for_selector("tr.result")
    rows = page.locator("tr.result")
    assert rows.count() == 4
    scores = [float(s) for s in page.locator("tr.result td.score").all_inner_texts()]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
    assert "ball" in rows.first.inner_text()
    page.wait_for_function("""() => {
        const images = [...document.querySelectorAll('tr.result img')];
        return images.length > 0 && images.every((img) => img.complete && img.naturalWidth > 0);
    }""")
    widths = page.eval_on_selector_all("tr.result img", "images => images.map((img) => img.naturalWidth)")
    assert widths and min(widths) > 0

    first_key = rows.first.get_attribute("data-key")
    rows.first.click()
    page.wait_for_selector("#related-images li")
    assert page.inner_text("#sample-key").startswith(first_key)
    assert "tags:" in page.inner_text("#sample-tags")
    page.wait_for_function("() => document.querySelector('#sample-image').naturalWidth > 0")
    page.wait_for_selector("#related-texts li")
    related_texts = page.locator("#related-texts li").all_inner_texts()
    assert related_texts and all(": " in text for text in related_texts)  # score key: the related text
    page.screenshot(path=str(tmp_path / "search.png"), full_page=True)
    assert (tmp_path / "search.png").stat().st_size > 0
    assert all(url.startswith(base_url) or url.startswith("blob:") for url in requests)  # nothing from outside


def test_a_bad_query_shows_the_service_message(base_url, page):
    page.goto(base_url)
    page.wait_for_selector("#index option", state="attached")
    page.fill("#query", "   ")
    page.click("#go")
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error") == "empty query"
    page.fill("#query", "ball")
    page.fill("#k", "0")
    page.click("#go")
    page.wait_for_function("() => document.querySelector('#error').textContent.includes('k:')")
    assert "1 <= k <= 1000" in page.inner_text("#error")


def test_the_query_lives_in_the_url_and_the_back_button_returns_to_it(base_url, page):
    from urllib.parse import parse_qs, urlsplit

    open_page(page, base_url + "?q=a+red+ball+on+the+grass&k=3")  # a shared link runs its search
    page.wait_for_selector("tr.result")
    assert page.input_value("#query") == "a red ball on the grass" and page.input_value("#k") == "3"
    first = result_keys(page)
    assert len(first) == 3
    page.fill("#query", "a kite in the sky")
    page.fill("#k", "2")
    page.click("#go")
    page.wait_for_function("() => document.querySelectorAll('tr.result').length === 2")
    assert parse_qs(urlsplit(page.url).query) == {"q": ["a kite in the sky"], "k": ["2"], "index": ["text"]}
    page.go_back()
    page.wait_for_function("() => document.querySelectorAll('tr.result').length === 3")
    assert result_keys(page) == first and page.input_value("#query") == "a red ball on the grass"
    page.go_forward()
    page.wait_for_function("() => document.querySelectorAll('tr.result').length === 2")
    assert page.input_value("#query") == "a kite in the sky"


def test_a_new_search_or_an_error_clears_the_side_panel(base_url, page):
    open_page(page, base_url + "?q=ball&k=3")
    page.wait_for_selector("tr.result")
    page.locator("tr.result td.key").first.click()
    page.wait_for_selector("#sample:not([hidden])")
    assert "sample=" in page.url  # the open sample is in the URL too
    page.fill("#query", "a tent")
    page.click("#go")
    page.wait_for_selector("#sample", state="hidden")
    assert page.inner_text("#sample-key") == ""
    page.locator("tr.result td.key").first.click()
    page.wait_for_selector("#sample:not([hidden])")
    page.fill("#k", "0")
    page.click("#go")
    page.wait_for_selector("#error:not([hidden])")
    assert page.locator("#sample").is_hidden() and page.locator("tr.result").count() == 0


def test_boxes_are_drawn_on_the_sample_image(base_url, page):
    open_page(page, base_url + "?key=coco-504518&sample=coco-504518")
    page.wait_for_selector("#boxes .box")
    page.wait_for_function("() => document.querySelector('#sample-image').naturalWidth > 0")
    labels = sorted(page.locator("#boxes .box span").all_inner_texts())
    assert labels == ["ball", "box"]  # coco-504518's two annotated regions
    image = page.locator("#sample-image").bounding_box()
    regions = {r["label"]: r["box"] for r in page.evaluate(
        "async () => (await (await fetch('/api/sample/coco-504518')).json()).regions")}
    for box in page.locator("#boxes .box").all():
        drawn, (x1, y1, x2, y2) = box.bounding_box(), regions[box.inner_text()]
        assert abs(drawn["x"] - (image["x"] + x1 * image["width"])) < 2.5  # where the region is, scaled
        assert abs(drawn["width"] - (x2 - x1) * image["width"]) < 2.5
        assert abs(drawn["y"] - (image["y"] + y1 * image["height"])) < 2.5
        assert abs(drawn["height"] - (y2 - y1) * image["height"]) < 2.5


def test_clicking_an_image_searches_by_it(base_url, page):
    open_page(page, base_url + "?q=a+red+ball+on+the+grass&k=4")
    page.wait_for_selector("tr.result")
    images_loaded(page, "tr.result img")
    row = page.locator("tr.result").filter(has=page.locator("img")).first
    key = row.get_attribute("data-key")
    row.locator("img").click()
    page.wait_for_function("(key) => new URLSearchParams(location.search).get('key') === key", arg=key)
    page.wait_for_selector("tr.result")
    assert page.input_value("#mode") == "key" and page.input_value("#query") == key
    assert key not in result_keys(page) and page.locator("#sample").is_hidden()  # a search, not the sample


def test_grid_view_has_larger_thumbnails(base_url, page):
    open_page(page, base_url + "?q=a+red+ball&k=6")
    page.wait_for_selector("tr.result")
    images_loaded(page, "tr.result img")
    listed = page.locator("tr.result img").first.bounding_box()
    page.check("input[name=view][value=grid]")
    page.wait_for_selector("#grid .card")
    images_loaded(page, "#grid .card img")
    assert "view=grid" in page.url and page.locator("#results").is_hidden()
    assert page.locator("#grid .card").count() == 6
    card = page.locator("#grid .card img").first.bounding_box()
    assert card["height"] >= 2 * listed["height"] and card["width"] >= 2 * listed["width"]
    page.locator("#grid .card .key").first.click()
    page.wait_for_selector("#sample:not([hidden])")


def test_fits_a_420_px_wide_screen(base_url, phone, tmp_path):
    open_page(phone, base_url + "?q=a+red+ball+on+the+grass&k=5")
    phone.wait_for_selector("tr.result")
    phone.locator("tr.result td.key").first.click()
    phone.wait_for_selector("#related-texts li")
    images_loaded(phone, "#sample-image")
    width = phone.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 420, f"the page is {width} px wide"
    for selector in ("#query", "#go", "tr.result", "#sample-image", "#related-texts li"):
        box = phone.locator(selector).first.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 420, selector
    phone.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    phone.check("input[name=view][value=grid]")
    phone.wait_for_selector("#grid .card")
    assert phone.evaluate("() => document.documentElement.scrollWidth") <= 420


def test_favicon(base_url, page):
    open_page(page, base_url)
    href = page.get_attribute("link[rel=icon]", "href")
    status, kind = page.evaluate("async (href) => { const r = await fetch(href); return [r.status, "
                                 "r.headers.get('content-type')]; }", href)
    assert (status, kind) == (200, "image/svg+xml")
