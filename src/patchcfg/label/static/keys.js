// The keyboard map (the page's help and the README list the keys).

import {$} from "./dom.js";
import {S, enqueue, gridN, targets} from "./state.js";
import {retrain, save, startJob} from "./panels.js";
import {render} from "./render.js";
import {leaveLike, likeThis, nextBatch, setView, toggleWholeGroups} from "./queue.js";
import {acceptModel, classChange, restAbsent, send, toggleFlag, undo} from "./labelling.js";

function classForKey(ev) {
  const m = /^Digit(\d)$/.exec(ev.code) || /^Numpad(\d)$/.exec(ev.code);
  if (!m) return null;
  const k = m[1] === "0" ? 9 : Number(m[1]) - 1;
  return S.state.classes[k] || null;
}

export function handleKey(ev) {
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
}
