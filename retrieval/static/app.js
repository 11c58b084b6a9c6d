// The search page: talks to the JSON API of the same service (retrieval/service.py); no external code.
"use strict";

const $ = (id) => document.getElementById(id);

function headers() {
  const token = $("token").value.trim();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function api(path) {
  const response = await fetch(path, { headers: headers() });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

// Images go through fetch too, so that a bearer token reaches them.
async function loadImage(img, path) {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) return;
  img.src = URL.createObjectURL(await response.blob());
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function loadIndexes() {
  try {
    const { indexes, max_k } = await api("/api/indexes");
    const select = $("index");
    select.replaceChildren();
    for (const [space, sources] of Object.entries(indexes)) {
      select.add(new Option(`${space} (all)`, space));
      for (const [source, n] of Object.entries(sources)) select.add(new Option(`${space}/${source} (${n})`, `${space}/${source}`));
    }
    $("k").max = max_k;
    const total = Object.values(indexes).flatMap(Object.values).reduce((a, b) => a + b, 0);
    $("status").textContent = `${total} vectors loaded`;
    showError("");
  } catch (e) {
    showError(`indexes: ${e.message}`);
  }
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function renderResults(results) {
  const table = $("results");
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const hit of results) {
    const row = body.insertRow();
    row.className = "result";
    row.dataset.key = hit.key;
    cell(row, hit.rank + 1);
    const imageCell = row.insertCell();
    if (hit.image) {
      const img = document.createElement("img");
      img.alt = hit.key;
      imageCell.append(img);
      loadImage(img, hit.image);
    }
    cell(row, hit.score.toFixed(4), "score");
    cell(row, hit.source);
    cell(row, hit.key, "key");
    cell(row, hit.text || "");
    row.addEventListener("click", () => showSample(hit.key));
  }
  table.hidden = false;
  if (!results.length) showError("no results");
}

async function search(event) {
  event.preventDefault();
  const params = new URLSearchParams({ [$("mode").value]: $("query").value, k: $("k").value });
  if ($("index").value) params.set("index", $("index").value);
  try {
    showError("");
    renderResults((await api(`/api/search?${params}`)).results);
  } catch (e) {
    $("results").hidden = true;
    showError(e.message);
  }
}

async function fillRelated(list, key, kind) {
  list.replaceChildren();
  try {
    const { results } = await api(`/api/related?${new URLSearchParams({ key, kind, k: 10 })}`);
    for (const hit of results) {
      const item = document.createElement("li");
      if (hit.image) {
        const img = document.createElement("img");
        img.alt = hit.key;
        item.append(img);
        loadImage(img, hit.image);
      }
      item.append(`${hit.score.toFixed(3)} ${hit.key}${hit.text ? ": " + hit.text : ""}`);
      item.addEventListener("click", () => showSample(hit.key));
      list.append(item);
    }
    if (!results.length) list.append("none");
  } catch (e) {
    list.append(e.message);
  }
}

async function showSample(key) {
  try {
    const sample = await api(`/api/sample/${encodeURIComponent(key)}`);
    $("sample").hidden = false;
    $("sample-key").textContent = `${sample.key} (${sample.modality})`;
    const img = $("sample-image");
    img.removeAttribute("src");
    img.hidden = !sample.image;
    if (sample.image) loadImage(img, sample.image);
    $("sample-text").textContent = sample.text || "";
    const labels = [...new Set(sample.regions.map((r) => r.label))];
    $("sample-tags").textContent = labels.length ? `tags: ${labels.join(", ")}` : "";
    fillRelated($("related-images"), key, "images");
    fillRelated($("related-texts"), key, "texts");
  } catch (e) {
    showError(e.message);
  }
}

$("search").addEventListener("submit", search);
$("token").addEventListener("change", loadIndexes);
loadIndexes();
