"""The search page in headless Chromium (Debian's binary driven by Playwright), against a real service on
127.0.0.1: type a query, see scored rows with loaded thumbnails, open a result and its related images."""

import threading

import pytest

from retrieval.query import QueryEngine
from retrieval.service import Service, make_server
from pipelines.minicorpus import served

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


@pytest.fixture
def page(tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield context.new_page()
        finally:
            context.close()


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
