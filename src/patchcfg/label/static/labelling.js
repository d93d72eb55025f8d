// Labelling: every change goes to the server, which journals it before it answers; undo, classes
// added and renamed.

import {guarded, say} from "./dom.js";
import {S, replaceRows, targets} from "./state.js";
import {api} from "./api.js";
import {fillSelects, loadState, refreshStateSoon} from "./panels.js";
import {render, renderClasses} from "./render.js";
import {nextBatch, rowsOf} from "./queue.js";

export async function send(items, changes, advance) {
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

export function advanceView() {
  if (S.view === "grid") { S.selected.clear(); return nextBatch(); }
  if (S.pos + 1 < S.batch.length) { S.pos++; render(); return Promise.resolve(); }
  return nextBatch();
}

export function classChange(items, c, value) {
  // value 1 or 0; pressing it again on rows that all hold it makes them unknown again
  const all = items.every((it) => it.labels[c] === value);
  if (S.state.exclusive && value === 1 && !all) {
    const changes = {};
    for (const other of S.state.classes) changes[other] = other === c ? 1 : 0;
    return changes;
  }
  return {[c]: all ? null : value};
}

export function cycleClass(c) {
  const items = targets();
  if (!items.length) return;
  const v = items[0].labels[c];
  const next = v === null ? 1 : v === 1 ? 0 : null;
  if (S.state.exclusive && next === 1) return send(items, classChange(items, c, 1), false);
  return send(items, {[c]: next}, false);
}

export function restAbsent() {
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

export function acceptModel() {
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

export function toggleFlag(key) {
  const items = targets();
  if (!items.length) return;
  const all = items.every((it) => it[key]);
  return send(items, {[key]: !all}, false);
}

export async function undo() {
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

export async function reloadAll() {
  await loadState();
  fillSelects();
  for (const it of S.batch) {
    try {
      replaceRows([await api("GET", `/api/row/${it.row}`)]);
    } catch (e) { /* the row is gone */ }
  }
  render();
}

export async function addClass(name) {
  await guarded(async () => {
    await api("POST", "/api/classes", {add: name});
    say(`class ${name} added (unknown everywhere)`);
    await reloadAll();
  });
}

export function startRename(div, old) {
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
