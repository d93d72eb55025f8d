// What the page holds: the server's state, the rows handed to it, the cursor and the selection.

import {say} from "./dom.js";

export const S = {
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
window.patchcfg = S;  // the page's one global: the browser tests read it

// Key actions run one after another, in the order pressed.
export function enqueue(work) {
  S.busy++;
  S.chain = S.chain.then(work).catch((e) => say(e.message, "error")).finally(() => { S.busy--; });
  return S.chain;
}

export function gridN() { return S.state ? S.state.settings.grid : 4; }

export function current() { return S.batch[S.pos]; }

export function targets() {
  if (S.view === "grid" && S.selected.size) {
    return [...S.selected].sort((a, b) => a - b).map((i) => S.batch[i]);
  }
  return current() ? [current()] : [];
}

export function replaceRows(rows) {
  // what the server says of a row replaces what the page held; what only the page's list knew of
  // it (its score, its group of near duplicates) stays
  const batches = S.like ? [S.batch, S.like.saved.batch] : [S.batch];
  for (const r of rows) {
    for (const batch of batches) {
      for (let i = 0; i < batch.length; i++) if (batch[i].row === r.row) batch[i] = {...batch[i], ...r};
    }
  }
}
