// Drawing the rows in hand: the single image, the grid of tiles, the label cells; images fetched
// once and kept.

import {$, esc} from "./dom.js";
import {S, current, gridN, targets} from "./state.js";
import {fitPanels} from "./panels.js";

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

export function prefetch() {
  const size = S.view === "grid" ? "thumb" : "full";
  for (let i = S.pos; i < Math.min(S.batch.length, S.pos + 4); i++) imageOf(S.batch[i].row, size);
}

function isDone(item) {
  return item.exclude || Object.values(item.labels).every((v) => v !== null);
}

// A review of the labels (mistakes) names the cell it doubts; once that label is changed, it no longer holds.
function suspectOf(item) {
  const s = item.suspect;
  return s && item.labels[s.class] === s.given ? s : null;
}

// Its p is out of fold, so it may differ from the bar's, which the label itself was fitted on.
function suspectTitle(s) {
  return `likely wrong: labelled ${s.given}, model says ${s.p.toFixed(2)} (out of fold)`;
}

function chips(item) {
  const out = [];
  const suspect = suspectOf(item);
  for (const [c, v] of Object.entries(item.labels)) {
    const doubted = suspect !== null && suspect.class === c;
    if (v !== 1 && !(v === 0 && (S.view !== "grid" || doubted))) continue;  // the grid: present, and doubted
    const title = doubted ? ` title="${esc(suspectTitle(suspect))}"` : "";
    out.push(`<span class="chip ${v === 1 ? "present" : "absent"}${doubted ? " suspect" : ""}"${title}>` +
      `${esc(c)}</span>`);
  }
  if (item.exclude) out.push(`<span class="chip flag">excluded</span>`);
  if (item.validation) out.push(`<span class="chip flag">validation</span>`);
  return out.join("");
}

export function render() {
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

export function renderClasses() {
  const st = S.state;
  if (!st) return;
  const items = targets();
  $("target").textContent = items.length > 1 ? `${items.length} selected`
    : items.length ? `row ${items[0].row}` : "";
  const box = $("classes");
  box.innerHTML = "";
  const suspect = items.length === 1 ? suspectOf(items[0]) : null;
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
    if (suspect && suspect.class === c) {
      div.classList.add("suspect");
      div.title = suspectTitle(suspect);
    }
    const bar = p == null ? ""
      : `<div class="bar" style="width:${Math.round(p * 100)}%"></div><span>${p.toFixed(2)}</span>`;
    div.innerHTML = `<kbd>${k < 10 ? (k + 1) % 10 : ""}</kbd>
      <span class="name" title="double-click to rename"></span>
      <button class="state ${cls}">${text}</button>
      <div class="prob" title="the model's probability">${bar}</div>`;
    div.querySelector(".name").textContent = c;
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
