// The search page: talks to the JSON API of the same service (retrieval/service.py); no external code.
// The state (query, kind, k, index, view, open sample) lives in the URL: a link shares a search, and the
// back button returns to the previous one.
"use strict";

const $ = (id) => document.getElementById(id);
const MODES = ["q", "tags", "key"];

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

function view() {
  return document.querySelector("input[name=view]:checked").value;
}

// --- the URL <-> the form ------------------------------------------------------------------------

function stateFromForm() {
  const params = new URLSearchParams({ [$("mode").value]: $("query").value, k: $("k").value });
  if ($("index").value) params.set("index", $("index").value);
  if (view() !== "list") params.set("view", view());
  return params;
}

function formFromState(params) {
  const mode = MODES.find((m) => params.has(m)) || "q";
  $("mode").value = mode;
  $("query").value = params.get(mode) || "";
  $("k").value = params.get("k") || "5";
  if (params.get("index")) $("index").value = params.get("index");
  const chosen = document.querySelector(`input[name=view][value="${params.get("view") || "list"}"]`);
  if (chosen) chosen.checked = true;
  return MODES.some((m) => params.has(m));
}

function go(params) {
  // a new entry in the history, unless it is the page we are on
  if (`?${params}` !== location.search) history.pushState(null, "", `?${params}`);
  return render(params);
}

async function render(params) {
  const hasQuery = formFromState(params);
  if (!hasQuery) {
    clearResults();
    closeSample();
    return;
  }
  await runSearch(params);
  if (params.get("sample")) await showSample(params.get("sample"));
}

// --- results ---------------------------------------------------------------------------------------

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function thumb(hit, big) {
  const img = document.createElement("img");
  img.alt = hit.key;
  img.title = "search with this image";
  img.className = big ? "big" : "";
  img.addEventListener("click", (event) => {
    event.stopPropagation();
    searchByKey(hit.key);
  });
  loadImage(img, hit.image);
  return img;
}

function clearResults() {
  $("results").hidden = true;
  $("grid").hidden = true;
  $("results").tBodies[0].replaceChildren();
  $("grid").replaceChildren();
}

function renderResults(results) {
  clearResults();
  if (view() === "grid") {
    for (const hit of results) {
      const card = document.createElement("li");
      card.className = "result card";
      card.dataset.key = hit.key;
      if (hit.image) card.append(thumb(hit, true));
      const caption = document.createElement("p");
      caption.innerHTML = '<span class="rank"></span> <span class="score"></span> <span class="key"></span><br><span class="text"></span>';
      caption.querySelector(".rank").textContent = `#${hit.rank + 1}`;
      caption.querySelector(".score").textContent = hit.score.toFixed(4);
      caption.querySelector(".key").textContent = hit.key;
      caption.querySelector(".text").textContent = hit.text || "";
      card.append(caption);
      card.addEventListener("click", () => openSample(hit.key));
      $("grid").append(card);
    }
    $("grid").hidden = false;
  } else {
    const body = $("results").tBodies[0];
    for (const hit of results) {
      const row = body.insertRow();
      row.className = "result";
      row.dataset.key = hit.key;
      cell(row, hit.rank + 1);
      const imageCell = row.insertCell();
      if (hit.image) imageCell.append(thumb(hit, false));
      cell(row, hit.score.toFixed(4), "score");
      cell(row, hit.source, "source");
      cell(row, hit.key, "key");
      cell(row, hit.text || "");
      row.addEventListener("click", () => openSample(hit.key));
    }
    $("results").hidden = false;
  }
  if (!results.length) showError("no results");
}

async function runSearch(params) {
  const query = new URLSearchParams(params);
  query.delete("view");
  query.delete("sample");
  closeSample(); // a new search, or its error, leaves no stale sample beside it
  try {
    showError("");
    renderResults((await api(`/api/search?${query}`)).results);
  } catch (e) {
    clearResults();
    showError(e.message);
  }
}

function searchByKey(key) {
  $("mode").value = "key";
  $("query").value = key;
  return go(stateFromForm());
}

// --- the side panel: one sample --------------------------------------------------------------------

function closeSample() {
  $("sample").hidden = true;
  $("sample-key").textContent = "";
  $("sample-text").textContent = "";
  $("sample-tags").textContent = "";
  $("boxes").replaceChildren();
  $("sample-image").removeAttribute("src");
  $("related-images").replaceChildren();
  $("related-texts").replaceChildren();
}

function openSample(key) {
  const params = new URLSearchParams(location.search);
  params.set("sample", key);
  history.pushState(null, "", `?${params}`);
  return showSample(key);
}

function drawBoxes(regions) {
  // boxes are [x1, y1, x2, y2] normalised to the image: percentages of the figure, whatever its size
  const layer = $("boxes");
  layer.replaceChildren();
  for (const region of regions) {
    const [x1, y1, x2, y2] = region.box;
    const box = document.createElement("div");
    box.className = `box ${region.origin}`;
    Object.assign(box.style, { left: `${100 * x1}%`, top: `${100 * y1}%`, width: `${100 * (x2 - x1)}%`, height: `${100 * (y2 - y1)}%` });
    const label = document.createElement("span");
    label.textContent = region.origin === "detector" ? `${region.label} ${region.score.toFixed(2)}` : region.label;
    box.append(label);
    layer.append(box);
  }
}

async function showSample(key) {
  try {
    const sample = await api(`/api/sample/${encodeURIComponent(key)}`);
    closeSample();
    $("sample").hidden = false;
    $("sample-key").textContent = `${sample.key} (${sample.modality})`;
    const img = $("sample-image");
    $("sample-figure").hidden = !sample.image;
    if (sample.image) {
      loadImage(img, sample.image);
      img.onclick = () => searchByKey(sample.key);
      drawBoxes(sample.regions);
    }
    $("sample-text").textContent = sample.text || "";
    const labels = [...new Set(sample.regions.map((r) => r.label))];
    $("sample-tags").textContent = labels.length ? `tags: ${labels.join(", ")}` : "";
    fillRelated($("related-images"), key, "images");
    fillRelated($("related-texts"), key, "texts");
  } catch (e) {
    closeSample();
    showError(e.message);
  }
}

async function fillRelated(list, key, kind) {
  list.replaceChildren();
  try {
    const { results } = await api(`/api/related?${new URLSearchParams({ key, kind, k: 10 })}`);
    for (const hit of results) {
      const item = document.createElement("li");
      if (hit.image) item.append(thumb(hit, false));
      item.append(`${hit.score.toFixed(3)} ${hit.key}${hit.text ? ": " + hit.text : ""}`);
      item.addEventListener("click", () => openSample(hit.key));
      list.append(item);
    }
    if (!results.length) list.append("none");
  } catch (e) {
    list.append(e.message);
  }
}

// --- start ---------------------------------------------------------------------------------------------

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
    return true;
  } catch (e) {
    showError(`indexes: ${e.message}`);
    return false;
  }
}

$("search").addEventListener("submit", (event) => {
  event.preventDefault();
  go(stateFromForm());
});
for (const radio of document.querySelectorAll("input[name=view]")) {
  radio.addEventListener("change", () => { if ($("query").value.trim()) go(stateFromForm()); });
}
$("close").addEventListener("click", () => {
  const params = new URLSearchParams(location.search);
  params.delete("sample");
  history.pushState(null, "", `?${params}`);
  closeSample();
});
window.addEventListener("popstate", () => render(new URLSearchParams(location.search)));
$("token").addEventListener("change", async () => {
  if (await loadIndexes()) render(new URLSearchParams(location.search));
});
loadIndexes().then(async (ok) => {
  if (ok) await render(new URLSearchParams(location.search));
  document.body.dataset.ready = "1"; // the page has read its URL (tests wait for this)
});
