// patchcfg label: the page. Plain JS; every change goes to the server, which journals it before it answers.
"use strict";

const TOKEN = document.querySelector('meta[name="patchcfg-token"]').content;
const CLIENT = sessionStorage.getItem("patchcfg-client") || (() => {
  const id = "c" + Math.random().toString(36).slice(2, 12);
  sessionStorage.setItem("patchcfg-client", id);
  return id;
})();

const S = {
  state: null,        // /api/state
  batch: [],          // the rows handed to this page, in order
  pos: 0,             // single view: index into batch; grid: the cursor
  view: localStorage.getItem("patchcfg-view") || "single",
  selected: new Set(),// grid: selected indices into batch
  seq: 0, generation: 0,
  images: new Map(),  // "row:size" -> {url, error}
  loading: false,
  chain: Promise.resolve(), // key actions run one after another, in the order pressed
  like: null,         // "more like this" (m): {query: rows, result: /api/similar, saved: the queue's page}
  wholeGroups: localStorage.getItem("patchcfg-whole-groups") !== "off",  // d: label near duplicates together
  busy: 0,                  // actions queued or running (tests wait for 0)
};
window.patchcfg = S;

function enqueue(work) {
  S.busy++;
  S.chain = S.chain.then(work).catch((e) => say(e.message, "error")).finally(() => { S.busy--; });
  return S.chain;
}

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------ server

async function api(method, path, body) {
  const headers = {"X-Patchcfg-Client": CLIENT};
  if (method !== "GET") { headers["X-Patchcfg-Token"] = TOKEN; headers["Content-Type"] = "application/json"; }
  let response;
  try {
    response = await fetch(path, {method, headers, credentials: "same-origin",
                                  body: body === undefined ? undefined : JSON.stringify(body)});
  } catch (e) {
    throw new Error("the app does not answer (stopped?): " + e.message);
  }
  let data = null;
  try { data = await response.json(); } catch (e) { data = {error: response.statusText}; }
  if (!response.ok) {
    const err = new Error(data.error || response.statusText);
    err.status = response.status;
    throw err;
  }
  if (data && typeof data.seq === "number") S.seq = Math.max(S.seq, data.seq);
  return data;
}

function say(text, level) {
  const line = document.createElement("div");
  line.className = level || "info";
  line.textContent = text;
  const log = $("log");
  log.prepend(line);
  while (log.children.length > 6) log.lastChild.remove();
  if (level === "error") setTimeout(() => line.remove(), 15000); else setTimeout(() => line.remove(), 5000);
}

async function guarded(work) {
  try { return await work(); } catch (e) { say(e.message, "error"); }
}

// ------------------------------------------------------------------ state

async function loadState() {
  const st = await api("GET", "/api/state");
  const first = !S.state;
  S.state = st;
  S.generation = st.generation;
  S.seq = Math.max(S.seq, st.seq);
  if (first) fillSelects();
  renderProgress();
  return st;
}

function fillSelects() {
  const st = S.state;
  const strategies = [];
  for (const s of st.strategies) {
    if (s.endsWith(":<class>")) for (const c of st.classes) strategies.push(s.replace("<class>", c));
    else strategies.push(s);
  }
  const subsets = [];
  for (const s of st.subsets) {
    if (s.endsWith(":<class>")) for (const c of st.classes) subsets.push(s.replace("<class>", c));
    else if (s === "subset:<name>") for (const v of st.subset_values) subsets.push(`subset:${v}`);
    else subsets.push(s);
  }
  const pick = (id, options, chosen) => {
    const el = $(id);
    const keep = el.value || localStorage.getItem("patchcfg-" + id) || chosen;
    el.innerHTML = "";
    if (!options.includes(keep)) options.push(keep);
    for (const o of options) {
      const opt = document.createElement("option");
      opt.value = opt.textContent = o;
      el.append(opt);
    }
    el.value = keep;
  };
  pick("strategy", strategies, st.query.strategy);
  pick("subset", subsets, st.query.subset);
}

function renderProgress() {
  const st = S.state;
  if (!st) return;
  const sess = st.session;
  $("session").innerHTML = "";
  for (const [label, value] of [["labelled", sess.rows_labelled], ["per hour", sess.labels_per_hour],
                                ["rows", st.counts.rows], ["excluded", st.counts.excluded]]) {
    const d = document.createElement("div");
    d.innerHTML = `<b>${value}</b><span class="muted">${label}</span>`;
    $("session").append(d);
  }
  const t = $("counts");
  t.innerHTML = "<tr><th>class</th><th>✓ train</th><th>✗ train</th><th>? train</th>" +
    "<th>✓ val</th><th>✗ val</th></tr>";
  for (const c of st.classes) {
    const k = st.counts.classes[c];
    const tr = document.createElement("tr");
    tr.innerHTML = `<td></td><td class="p">${k.train.present}</td><td class="a">${k.train.absent}</td>
      <td>${k.train.unknown}</td><td class="p">${k.validation.present}</td>
      <td class="a">${k.validation.absent}</td>`;
    tr.firstChild.textContent = c;
    t.append(tr);
  }
  $("order").textContent = "next images: " + st.ordered_by;
  const m = st.model;
  let model = m.version ? `model: ${m.source} v${m.version}` : "model: none yet";
  if (m.metrics && m.metrics.val_macro_auc != null) {
    model += ` · val macro AUC ${m.metrics.val_macro_auc.toFixed(3)}`;
  }
  if (m.fitting) model += " · refitting…";
  if (m.stopped) model += " · stop_when reached, retraining stopped";
  model += ` · features: ${m.features}`;
  if (m.features === "computing" || m.features === "updating") {
    model += ` (${Math.round(m.features_seconds || 0)} s: ${m.features_message})`;
  }
  $("model").textContent = model;
  renderLearning(st);
  const banner = $("banner");
  banner.hidden = !st.error;
  banner.textContent = st.error || "";
  fitPanels();
}

// ------------------------------------------------------------------ learning: curve, stop rule, jobs

function renderLearning(st) {
  const m = st.model;
  const ranked = S.batchVersion ? `v${S.batchVersion}` : "none (random order)";
  $("ranked").textContent = `these images were ranked by model ${ranked}; newest model v${m.version}`;
  const stop = $("stop");
  stop.hidden = !m.stopped_at;
  if (m.stopped_at) {
    const held = Object.entries(m.stopped_at.metrics).map(([k, v]) => `${k} ${v.toFixed(3)}`).join(", ");
    const at = m.stopped_at;
    stop.textContent = `stop_when holds at ${at.labels} labels (v${at.version}: ${held}):` +
      " automatic retraining stopped; r refits when you ask";
  }
  const warn = $("val-warn");
  warn.hidden = !(st.validation_warnings && st.validation_warnings.length);
  warn.textContent = (st.validation_warnings || []).join("; ");
  const table = $("class-metrics");
  const metrics = m.metrics || {};
  table.innerHTML = "<tr><th>class</th><th>val labels (✓/✗)</th>" +
    `<th>val AUC · ${m.source} v${m.version}</th></tr>`;
  for (const c of st.classes) {
    const k = st.counts.classes[c].validation;
    const auc = metrics[`val_auc_${c}`];
    const tr = document.createElement("tr");
    const shown = auc == null ? "–" : auc.toFixed(3);
    tr.innerHTML = `<td></td><td>${k.present} / ${k.absent}</td><td>${shown}</td>`;
    tr.firstChild.textContent = c;
    table.append(tr);
  }
  drawCurve(m.curve || []);
  renderJobs(st.jobs || []);
}

function drawCurve(points) {
  const svg = $("curve"), NS = "http://www.w3.org/2000/svg";
  const W = 320, H = 150, L = 30, R = 8, T = 8, B = 22;
  svg.replaceChildren();
  const el = (name, attrs, text) => {
    const e = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text != null) e.textContent = text;
    svg.append(e);
    return e;
  };
  const pts = points.filter((p) => p.val_macro_auc != null && p.labels != null);
  const maxX = Math.max(10, ...pts.map((p) => p.labels));
  const minY = Math.min(0.5, ...pts.map((p) => p.val_macro_auc));
  const x = (v) => L + (W - L - R) * v / maxX;
  const y = (v) => T + (H - T - B) * (1 - (v - minY) / (1 - minY || 1));
  el("line", {x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis"});
  el("line", {x1: L, y1: T, x2: L, y2: H - B, class: "axis"});
  el("text", {x: L - 4, y: T + 6, "text-anchor": "end"}, "1");
  el("text", {x: L - 4, y: H - B, "text-anchor": "end"}, minY.toFixed(2));
  el("text", {x: W - R, y: H - 6, "text-anchor": "end"}, `${maxX} labels`);
  el("text", {x: L + 4, y: H - 6}, "val macro AUC");
  const quick = pts.filter((p) => p.model === "quick_head");
  if (quick.length > 1) {
    const line = quick.map((p) => `${x(p.labels)},${y(p.val_macro_auc)}`).join(" ");
    el("polyline", {class: "quick", points: line});
  }
  for (const p of quick) el("circle", {class: "quick-pt", cx: x(p.labels), cy: y(p.val_macro_auc), r: 2.5});
  for (const p of pts.filter((q) => q.model !== "quick_head")) {
    el("rect", {class: "job-pt", x: x(p.labels) - 3, y: y(p.val_macro_auc) - 3, width: 6, height: 6});
  }
  const last = pts[pts.length - 1];
  $("curve-legend").textContent = pts.length
    ? `● quick head ■ finetune jobs · ${pts.length} points · last: ${last.val_macro_auc.toFixed(3)} ` +
      `at ${last.labels} labels`
    : "no point yet: the curve needs validation labels of both values for some class (v marks one)";
}

function renderJobs(jobs) {
  const box = $("jobs");
  box.replaceChildren();
  for (const j of jobs.slice(-4).reverse()) {
    const div = document.createElement("div");
    div.className = "job";
    let text = `job ${j.id}: ${j.state}`;
    if (j.state === "running") text += ` · ${j.progress}`;
    if (j.state === "complete" && j.metrics) {
      const auc = j.metrics.val_macro_auc;
      text += ` · val macro AUC ${auc == null ? "n/a" : auc.toFixed(3)} · ` +
        (j.applied ? "ranks the queue" : "the quick head scores better");
    }
    if (j.state === "failed" && j.error) text += ` · ${j.error.slice(0, 160)}`;
    const span = document.createElement("span");
    span.textContent = text;
    div.append(span);
    if (j.state === "running") {
      const b = document.createElement("button");
      b.textContent = "cancel";
      b.addEventListener("click", () => enqueue(() => cancelJob(j.id)));
      div.append(b);
    }
    box.append(div);
  }
}

async function startJob() {
  await guarded(async () => {
    const r = await api("POST", "/api/jobs/finetune", {});
    say(`finetune job ${r.job.id} started on ${r.job.labels} labelled rows`);
    await loadState();
  });
}

async function cancelJob(id) {
  await guarded(async () => {
    await api("DELETE", `/api/jobs/${encodeURIComponent(id)}`);
    say(`job ${id} cancelled`);
    await loadState();
  });
}

let stateTimer = null;
function refreshStateSoon() {
  clearTimeout(stateTimer);
  stateTimer = setTimeout(() => guarded(loadState), 700);
}

// ------------------------------------------------------------------ queue

function gridN() { return S.state ? S.state.settings.grid : 4; }

async function nextBatch() {
  if (S.like) return likeBatch();
  if (S.loading) return;
  S.loading = true;
  try {
    const strategy = $("strategy").value, subset = $("subset").value;
    localStorage.setItem("patchcfg-strategy", strategy);
    localStorage.setItem("patchcfg-subset", subset);
    const n = Math.max(gridN() * gridN(), S.view === "grid" ? 0 : 12);
    const query = new URLSearchParams({strategy, subset, n});
    const q = await api("GET", `/api/queue?${query}`);
    S.batch = q.rows;
    S.touched = false;  // nothing labelled in this batch yet
    S.batchVersion = q.version;  // the model version that ranked it (0: none, random)
    S.pos = 0;
    S.selected.clear();
    if (S.state) { S.state.ordered_by = q.ordered_by; renderProgress(); }
    render();
    prefetch();
  } catch (e) {
    say(e.message, "error");
  } finally {
    S.loading = false;
  }
}

function current() { return S.batch[S.pos]; }

function targets() {
  if (S.view === "grid" && S.selected.size) {
    return [...S.selected].sort((a, b) => a - b).map((i) => S.batch[i]);
  }
  return current() ? [current()] : [];
}

function replaceRows(rows) {
  // what the server says of a row replaces what the page held; what only the page's list knew of
  // it (its score, its group of near duplicates) stays
  const batches = S.like ? [S.batch, S.like.saved.batch] : [S.batch];
  for (const r of rows) {
    for (const batch of batches) {
      for (let i = 0; i < batch.length; i++) if (batch[i].row === r.row) batch[i] = {...batch[i], ...r};
    }
  }
}

// ------------------------------------------------------------------ more like this (m)

async function fetchLike(query) {
  const params = new URLSearchParams({rows: query.join(","), n: gridN() * gridN()});
  return api("GET", `/api/similar?${params}`);
}

function showLike(result) {
  S.like.result = result;
  S.batch = result.rows;
  S.pos = 0;
  S.selected.clear();
  render();
  prefetch();
}

async function likeThis() {
  if (S.like) return leaveLike();
  const items = S.view === "grid" && S.selected.size ? targets() : current() ? [current()] : [];
  if (!items.length) return;
  const query = items.map((it) => it.row);
  S.loading = true;
  try {
    const result = await fetchLike(query);
    const saved = {batch: S.batch, pos: S.pos, view: S.view, selected: new Set(S.selected)};
    S.like = {query, result, saved};
    S.view = "grid";
    showLike(result);
  } catch (e) {
    say(e.message, "error");
  } finally {
    S.loading = false;
  }
}

async function likeBatch() {  // the next nearest (the ones labelled have left the candidates)
  if (S.loading) return;
  S.loading = true;
  try {
    showLike(await fetchLike(S.like.query));
  } catch (e) {
    say(e.message, "error");
  } finally {
    S.loading = false;
  }
}

function leaveLike() {  // back to the queue's page, where it was
  const saved = S.like.saved;
  S.like = null;
  S.batch = saved.batch;
  S.pos = Math.min(saved.pos, Math.max(0, S.batch.length - 1));
  S.view = saved.view;
  S.selected = saved.selected;
  render();
  prefetch();
}

function toggleWholeGroups() {
  S.wholeGroups = !S.wholeGroups;
  localStorage.setItem("patchcfg-whole-groups", S.wholeGroups ? "on" : "off");
  say(S.wholeGroups ? "labels apply to every near duplicate of a tile"
    : "labels apply to the image shown only, not its near duplicates");
  render();
}

function rowsOf(items) {
  // in "more like this", a tile stands for its near duplicates too (unless d turned that off)
  if (!S.like || !S.wholeGroups) return items.map((it) => it.row);
  const rows = new Set();
  for (const it of items) for (const r of it.group || [it.row]) rows.add(r);
  return [...rows];
}

function renderLike() {
  const bar = $("like");
  bar.hidden = !S.like;
  $("empty").textContent = S.like ? "No unlabelled image left to compare with (all labelled, excluded or " +
    "held by another annotator). Esc or m: back to the queue."
    : "No images left in this subset. Pick another subset or strategy above.";
  if (!S.like) return;
  const r = S.like.result, q = S.like.query;
  const what = q.length === 1 ? `row ${q[0]}` : `the ${q.length} selected images`;
  const grouped = r.rows.filter((it) => it.group.length > 1).length;
  let text = `<b>More like ${esc(what)}</b>: the ${r.rows.length} nearest unlabelled images ` +
    `(of ${r.candidates}), most similar first`;
  if (r.threshold != null) {
    text += ` · near duplicates (similarity ≥ ${r.threshold}) as one tile ×N` +
      (grouped ? `, ${grouped} here` : "") +
      `, labelled ${S.wholeGroups ? "together" : "one by one"} <kbd>d</kbd>`;
  }
  text += " · <kbd>Esc</kbd> or <kbd>m</kbd>: back to the queue";
  bar.innerHTML = text;
}

function likeInfo(item) {
  if (!S.like || item.similarity == null) return "";
  const n = item.group ? item.group.length : 1;
  const title = n > 1 ? ` title="${n} near duplicates: labelled together unless d says otherwise"` : "";
  return `<div class="like-info"><span class="sim">${item.similarity.toFixed(3)}</span>` +
    (n > 1 ? `<span class="count"${title}>×${n}</span>` : "") + "</div>";
}

// ------------------------------------------------------------------ images

async function imageOf(row, size) {
  const key = row + ":" + size;
  if (S.images.has(key)) return S.images.get(key);
  const promise = (async () => {
    const response = await fetch(`/api/image/${row}?size=${size}`, {credentials: "same-origin"});
    if (!response.ok) {
      let msg = response.statusText; try { msg = (await response.json()).error; } catch (e) { /* not JSON */ }
      return {url: "", error: msg};
    }
    const blob = await response.blob();
    return {url: URL.createObjectURL(blob), error: response.headers.get("X-Patchcfg-Image-Error")};
  })();
  S.images.set(key, promise);
  if (S.images.size > 600) { const first = S.images.keys().next().value; S.images.delete(first); }
  return promise;
}

function prefetch() {
  const size = S.view === "grid" ? "thumb" : "full";
  for (let i = S.pos; i < Math.min(S.batch.length, S.pos + 4); i++) imageOf(S.batch[i].row, size);
}

// ------------------------------------------------------------------ rendering

function isDone(item) {
  return item.exclude || Object.values(item.labels).every((v) => v !== null);
}

function chips(item) {
  const out = [];
  for (const [c, v] of Object.entries(item.labels)) {
    if (v === 1) out.push(`<span class="chip present"></span>`.replace("></", `>${esc(c)}</`));
    else if (v === 0 && S.view !== "grid") out.push(`<span class="chip absent">${esc(c)}</span>`);
  }
  if (item.exclude) out.push(`<span class="chip flag">excluded</span>`);
  if (item.validation) out.push(`<span class="chip flag">validation</span>`);
  return out.join("");
}

function esc(text) {
  const named = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"};
  return String(text).replace(/[&<>"']/g, (ch) => named[ch]);
}

function render() {
  const grid = S.view === "grid";
  $("btn-view").textContent = grid ? "single (g)" : "grid (g)";
  $("empty").hidden = S.batch.length > 0;
  $("single").hidden = grid || !S.batch.length;
  $("grid").hidden = !grid || !S.batch.length;
  renderLike();
  if (grid) renderGrid(); else renderSingle();
  renderClasses();
}

async function renderSingle() {
  const item = current();
  if (!item) return;
  $("single").dataset.row = item.row;
  $("caption").innerHTML = `row ${item.row} · ${esc(item.filepath)} · ${S.pos + 1}/${S.batch.length}` +
    (item.picked_by ? ` · picked by ${esc(item.picked_by)}` : "") +
    (item.score != null ? ` (${item.score})` : "") +
    (S.like && item.similarity != null ? ` · similarity ${item.similarity.toFixed(3)}` +
      (item.group.length > 1 ? ` · ×${item.group.length} near duplicates` : "") : "") +
    `<div class="chips">${chips(item)}</div>`;
  const wanted = item.row;
  const img = await imageOf(item.row, "full");
  if (!current() || current().row !== wanted || S.view !== "single") return;
  $("full").src = img.url;
  $("image-error").hidden = !img.error;
  $("image-error").textContent = img.error ? img.error + " — press x to exclude it" : "";
  prefetch();
}

function renderGrid() {
  const n = gridN();
  const g = $("grid");
  g.style.gridTemplateColumns = `repeat(${n}, minmax(0, 1fr))`;
  g.style.maxWidth = "min(100%, calc(100vh - 90px))";
  g.innerHTML = "";
  S.batch.forEach((item, i) => {
    const tile = document.createElement("div");
    tile.className = "tile" + (i === S.pos ? " cursor" : "") + (S.selected.has(i) ? " selected" : "") +
      (isDone(item) ? " done" : "");
    tile.dataset.index = i;
    tile.dataset.row = item.row;
    tile.innerHTML = `<img alt=""><div class="chips">${chips(item)}</div><div class="num">${item.row}</div>` +
      likeInfo(item);
    tile.addEventListener("click", (ev) => {
      if (ev.shiftKey && S.pos >= 0) {
        const [a, b] = [Math.min(S.pos, i), Math.max(S.pos, i)];
        for (let k = a; k <= b; k++) S.selected.add(k);
      } else if (S.selected.has(i)) S.selected.delete(i); else S.selected.add(i);
      S.pos = i;
      render();
    });
    tile.addEventListener("dblclick", () => { S.pos = i; S.selected.clear(); setView("single"); });
    g.append(tile);
    imageOf(item.row, "thumb").then((img) => {
      tile.querySelector("img").src = img.url;
      if (img.error) {
        const e = document.createElement("div");
        e.className = "err";
        e.textContent = img.error;
        tile.append(e);
      }
    });
  });
}

function renderClasses() {
  const st = S.state;
  if (!st) return;
  const items = targets();
  $("target").textContent = items.length > 1 ? `${items.length} selected`
    : items.length ? `row ${items[0].row}` : "";
  const box = $("classes");
  box.innerHTML = "";
  st.classes.forEach((c, k) => {
    const values = new Set(items.map((it) => it.labels[c]));
    // no image shown (the queue is empty): nothing is known, nothing is mixed
    const v = values.size === 0 ? null : values.size === 1 ? [...values][0] : "mixed";
    const cls = v === 1 ? "present" : v === 0 ? "absent"
      : v === null || v === undefined ? "unknown" : "mixed";
    const text = {present: "present", absent: "absent", unknown: "?", mixed: "mixed"}[cls];
    const p = items.length === 1 && items[0].probabilities ? items[0].probabilities[c] : null;
    const div = document.createElement("div");
    div.className = "cls";
    div.dataset.cls = c;
    const bar = p == null ? ""
      : `<div class="bar" style="width:${Math.round(p * 100)}%"></div><span>${p.toFixed(2)}</span>`;
    div.innerHTML = `<kbd>${k < 10 ? (k + 1) % 10 : ""}</kbd>
      <span class="name" title="double-click to rename"></span>
      <button class="state ${cls}">${text}</button>
      <div class="prob" title="the model's probability">${bar}</div>`;
    div.querySelector(".name").textContent = c;
    div.querySelector(".state").addEventListener("click", () => enqueue(() => cycleClass(c)));
    div.querySelector(".name").addEventListener("dblclick", () => startRename(div, c));
    box.append(div);
  });
  const flag = (id, key) => {
    const on = items.length && items.every((it) => it[key]);
    $(id).classList.toggle("on", !!on);
  };
  flag("flag-exclude", "exclude");
  flag("flag-validation", "validation");
  fitPanels();
}

// The side panels in two columns (labels | progress and learning) when in one column the progress
// would end below the window (many classes) and the window is wide enough to keep the image beside them.
const TWO_PANELS_MIN_WIDTH = 1240;

function fitPanels() {
  const main = document.querySelector("main"), aside = document.querySelector("aside");
  const two = main.classList.contains("two-panels");
  if (two) main.classList.remove("two-panels");  // measure the one-column layout
  const box = $("progress-box");  // its offsetParent is the aside
  const below = box.offsetTop + box.offsetHeight > aside.clientHeight;
  const wanted = below && window.innerWidth >= TWO_PANELS_MIN_WIDTH;
  main.classList.toggle("two-panels", wanted);
}

function startRename(div, old) {
  const name = div.querySelector(".name");
  const input = document.createElement("input");
  input.className = "rename";
  input.value = old;
  name.replaceWith(input);
  input.focus();
  input.select();
  input.addEventListener("keydown", async (ev) => {
    ev.stopPropagation();
    if (ev.key === "Escape") return renderClasses();
    if (ev.key !== "Enter") return;
    const to = input.value.trim();
    if (!to || to === old) return renderClasses();
    await guarded(async () => {
      await api("POST", "/api/classes", {rename: old, to});
      say(`class ${old} renamed to ${to}`);
      await reloadAll();
    });
  });
  input.addEventListener("blur", () => setTimeout(renderClasses, 100));
}

function setView(view) {
  S.view = view;
  if (S.like) return render();  // the same neighbours, one at a time or as the grid
  localStorage.setItem("patchcfg-view", view);
  if (view === "grid") return nextBatch();  // a fresh page of images to label
  render();
}

// ------------------------------------------------------------------ labelling

async function send(items, changes, advance) {
  if (!items.length) return;
  const rows = rowsOf(items);
  const body = rows.length === 1 ? {row: rows[0], changes} : {rows, changes};
  S.touched = true;
  try {
    const result = await api("POST", "/api/label", body);
    replaceRows(result.rows);
    refreshStateSoon();
    if (advance) return advanceView();
    render();
  } catch (e) {
    say(e.message, "error");
    if (e.status === 409) nextBatch();
  }
}

function advanceView() {
  if (S.view === "grid") { S.selected.clear(); return nextBatch(); }
  if (S.pos + 1 < S.batch.length) { S.pos++; render(); return Promise.resolve(); }
  return nextBatch();
}

function classChange(items, c, value) {
  // value 1 or 0; pressing it again on rows that all hold it makes them unknown again
  const all = items.every((it) => it.labels[c] === value);
  if (S.state.exclusive && value === 1 && !all) {
    const changes = {};
    for (const other of S.state.classes) changes[other] = other === c ? 1 : 0;
    return changes;
  }
  return {[c]: all ? null : value};
}

function cycleClass(c) {
  const items = targets();
  if (!items.length) return;
  const v = items[0].labels[c];
  const next = v === null ? 1 : v === 1 ? 0 : null;
  if (S.state.exclusive && next === 1) return send(items, classChange(items, c, 1), false);
  return send(items, {[c]: next}, false);
}

function restAbsent() {
  const whole = S.view === "grid" && !S.selected.size;  // the grid without a selection: the whole page
  const items = whole ? S.batch.filter((it) => !it.exclude) : targets();
  const groups = new Map();
  for (const it of items) {
    const changes = {};
    for (const c of S.state.classes) if (it.labels[c] === null) changes[c] = 0;
    const key = JSON.stringify(changes);
    if (!Object.keys(changes).length) continue;
    if (!groups.has(key)) groups.set(key, {changes, items: []});
    groups.get(key).items.push(it);
  }
  if (!groups.size) return advanceView();
  return (async () => {
    for (const g of groups.values()) await send(g.items, g.changes, false);
    return advanceView();
  })();
}

function acceptModel() {
  const items = targets();
  const it = items[0];
  if (!it || !it.probabilities) {
    say("no model guess for this image yet (retrain, or label a few of each class)", "error");
    return;
  }
  const changes = {};
  if (S.state.exclusive) {
    let best = null;
    for (const c of S.state.classes) {
      if (best === null || it.probabilities[c] > it.probabilities[best]) best = c;
    }
    for (const c of S.state.classes) if (it.labels[c] === null) changes[c] = c === best ? 1 : 0;
  } else {
    for (const c of S.state.classes) {
      if (it.labels[c] === null) changes[c] = it.probabilities[c] >= 0.5 ? 1 : 0;
    }
  }
  if (!Object.keys(changes).length) return advanceView();
  return send([it], changes, true);
}

function toggleFlag(key) {
  const items = targets();
  if (!items.length) return;
  const all = items.every((it) => it[key]);
  return send(items, {[key]: !all}, false);
}

async function undo() {
  await guarded(async () => {
    const result = await api("POST", "/api/undo", {});
    replaceRows(result.rows);
    if (result.rows.length && S.view === "single") {
      const i = S.batch.findIndex((it) => it.row === result.rows[0].row);
      if (i >= 0) S.pos = i; else { S.batch.splice(S.pos, 0, ...result.rows.slice(0, 1)); }
    }
    const kept = result.kept.length ? `; kept newer: ${result.kept.join(", ")}` : "";
    say(`undone (${result.changed} change${result.changed === 1 ? "" : "s"})${kept}`);
    render();
    refreshStateSoon();
  });
}

async function reloadAll() {
  await loadState();
  fillSelects();
  for (const it of S.batch) {
    try {
      replaceRows([await api("GET", `/api/row/${it.row}`)]);
    } catch (e) { /* the row is gone */ }
  }
  render();
}

async function addClass(name) {
  await guarded(async () => {
    await api("POST", "/api/classes", {add: name});
    say(`class ${name} added (unknown everywhere)`);
    await reloadAll();
  });
}

// ------------------------------------------------------------------ events from the server

async function poll() {
  try {
    const ev = await api("GET", `/api/events?since=${S.seq}`);
    if (ev.generation !== S.generation) { S.generation = ev.generation; await reloadAll(); }
    else if (ev.rows.length) { replaceRows(ev.rows); render(); }
    S.seq = ev.seq;
    if (S.state) {
      const before = S.state.model.version;
      S.state.model = ev.model; S.state.error = ev.error; S.state.ordered_by = ev.ordered_by;
      S.state.jobs = ev.jobs;
      if (ev.model.version !== before && ev.model.version > 0) {
        // The first model while the first images are still untouched: rank them now.
        if (!S.batchVersion && !S.touched && S.pos === 0 && !S.like) enqueue(nextBatch);
        else say(`model v${ev.model.version} ready: q ranks the next images with it`);
      }
      renderProgress();
    }
  } catch (e) {
    $("banner").hidden = false;
    $("banner").textContent = e.message;
  }
  setTimeout(poll, 2000);
}

// ------------------------------------------------------------------ keys

function classForKey(ev) {
  const m = /^Digit(\d)$/.exec(ev.code) || /^Numpad(\d)$/.exec(ev.code);
  if (!m) return null;
  const k = m[1] === "0" ? 9 : Number(m[1]) - 1;
  return S.state.classes[k] || null;
}

document.addEventListener("keydown", (ev) => {
  if (ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT") {
    if (ev.key === "Escape") ev.target.blur();
    return;
  }
  if (!S.state) return;
  const help = $("help");
  if (ev.key === "?") { help.hidden = !help.hidden; ev.preventDefault(); return; }
  if (ev.key === "Escape") {
    // in "more like this": close the help, else select none, else back to the queue
    if (S.like && help.hidden && !S.selected.size) { enqueue(leaveLike); return; }
    const wasHelp = !help.hidden;
    help.hidden = true;
    if (!S.like || !wasHelp) { S.selected.clear(); render(); }
    return;
  }
  if (ev.altKey || ev.metaKey) return;
  if (ev.ctrlKey) {
    if (ev.key === "a" && S.view === "grid") {
      S.batch.forEach((_, i) => S.selected.add(i));
      render();
      ev.preventDefault();
    }
    return;
  }
  const c = classForKey(ev);
  const shift = ev.shiftKey;
  if (c) {
    ev.preventDefault();
    enqueue(() => {
      const items = targets();
      return items.length ? send(items, classChange(items, c, shift ? 0 : 1), false) : null;
    });
    return;
  }
  const n = gridN();
  const move = (d) => { S.pos = Math.max(0, Math.min(S.batch.length - 1, S.pos + d)); render(); };
  const actions = {
    "Enter": restAbsent, "a": acceptModel, "z": undo, "q": nextBatch, "r": retrain, "s": save, "f": startJob,
    "x": () => toggleFlag("exclude"), "v": () => toggleFlag("validation"),
    "m": likeThis, "d": toggleWholeGroups,
    "g": () => setView(S.view === "grid" ? "single" : "grid"),
    "ArrowRight": () => (S.view === "single" && S.pos + 1 >= S.batch.length ? nextBatch() : move(1)),
    "ArrowLeft": () => move(-1),
    "ArrowDown": () => S.view === "grid" && move(n),
    "ArrowUp": () => S.view === "grid" && move(-n),
    " ": () => {
      if (S.view !== "grid") return move(1);
      if (S.selected.has(S.pos)) S.selected.delete(S.pos); else S.selected.add(S.pos);
      render();
    },
  };
  if (ev.key === "c") { $("new-class").focus(); ev.preventDefault(); return; }
  if (!(ev.key in actions)) return;
  ev.preventDefault();
  enqueue(actions[ev.key]);
});

async function retrain() {
  await guarded(async () => {
    say("retraining the quick head…");
    const r = await api("POST", "/api/retrain", {});
    const auc = r.metrics.val_macro_auc;
    say(`model v${r.version} ready` + (auc != null ? ` (val macro AUC ${auc.toFixed(3)})` : ""));
    await loadState();
  });
}

async function save() {
  await guarded(async () => {
    const r = await api("POST", "/api/flush", {});
    say(r.written ? "table written" : r.error, r.written ? "info" : "error");
    await loadState();
  });
}

// ------------------------------------------------------------------ wiring

// A clicked button gives the focus back, so that Enter and Space keep meaning what the keys say.
document.addEventListener("click", (ev) => { const b = ev.target.closest("button"); if (b) b.blur(); });
$("btn-view").addEventListener("click", () => setView(S.view === "grid" ? "single" : "grid"));
$("btn-retrain").addEventListener("click", retrain);
$("btn-finetune").addEventListener("click", () => enqueue(startJob));
$("btn-save").addEventListener("click", save);
$("btn-help").addEventListener("click", () => { $("help").hidden = !$("help").hidden; });
$("help").addEventListener("click", () => { $("help").hidden = true; });
$("btn-rest").addEventListener("click", () => enqueue(restAbsent));
$("btn-accept").addEventListener("click", () => enqueue(acceptModel));
$("btn-prev").addEventListener("click", () => { S.pos = Math.max(0, S.pos - 1); render(); });
$("btn-next").addEventListener("click", () => enqueue(advanceView));
$("btn-undo").addEventListener("click", () => enqueue(undo));
$("flag-exclude").addEventListener("click", () => enqueue(() => toggleFlag("exclude")));
$("flag-validation").addEventListener("click", () => enqueue(() => toggleFlag("validation")));
const reorder = (ev) => { ev.target.blur(); if (S.like) leaveLike(); nextBatch(); };
$("strategy").addEventListener("change", reorder);
$("subset").addEventListener("change", reorder);
window.addEventListener("resize", fitPanels);
$("add-class").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const name = $("new-class").value.trim();
  $("new-class").value = "";
  $("new-class").blur();
  if (name) enqueue(() => addClass(name));
});

(async () => {
  await guarded(loadState);
  if (!S.state) return;
  await nextBatch();
  setTimeout(poll, 2000);
})();
