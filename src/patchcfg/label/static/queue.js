// What the page shows next: the queue's batches, single or grid, and more like this (m).

import {$, say} from "./dom.js";
import {S, current, gridN, targets} from "./state.js";
import {api} from "./api.js";
import {renderProgress} from "./panels.js";
import {prefetch, render} from "./render.js";

export async function nextBatch() {
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

export function setView(view) {
  S.view = view;
  if (S.like) return render();  // the same neighbours, one at a time or as the grid
  localStorage.setItem("patchcfg-view", view);
  if (view === "grid") return nextBatch();  // a fresh page of images to label
  render();
}

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

export async function likeThis() {
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

export function leaveLike() {  // back to the queue's page, where it was
  const saved = S.like.saved;
  S.like = null;
  S.batch = saved.batch;
  S.pos = Math.min(saved.pos, Math.max(0, S.batch.length - 1));
  S.view = saved.view;
  S.selected = saved.selected;
  render();
  prefetch();
}

export function toggleWholeGroups() {
  S.wholeGroups = !S.wholeGroups;
  localStorage.setItem("patchcfg-whole-groups", S.wholeGroups ? "on" : "off");
  say(S.wholeGroups ? "labels apply to every near duplicate of a tile"
    : "labels apply to the image shown only, not its near duplicates");
  render();
}

export function rowsOf(items) {
  // in "more like this", a tile stands for its near duplicates too (unless d turned that off)
  if (!S.like || !S.wholeGroups) return items.map((it) => it.row);
  const rows = new Set();
  for (const it of items) for (const r of it.group || [it.row]) rows.add(r);
  return [...rows];
}
