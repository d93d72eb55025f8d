// patchcfg label: the page, in ES modules served as they are (no build step). Wires the buttons,
// the keys and the server's events, then loads the first images.

import {$, guarded, say} from "./dom.js";
import {S, enqueue, replaceRows} from "./state.js";
import {api} from "./api.js";
import {fitPanels, loadState, renderProgress, retrain, save, startJob} from "./panels.js";
import {render} from "./render.js";
import {leaveLike, nextBatch, setView} from "./queue.js";
import {
  acceptModel, addClass, advanceView, cycleClass, reloadAll, restAbsent, startRename, toggleFlag, undo,
} from "./labelling.js";
import {handleKey} from "./keys.js";

// The server's events, every 2 s: rows other clients changed, a new model, messages.
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

document.addEventListener("keydown", handleKey);
// The tiles and the label cells are drawn anew at each render: their clicks are taken here, once.
$("grid").addEventListener("click", (ev) => {
  const tile = ev.target.closest(".tile");
  if (!tile) return;
  const i = Number(tile.dataset.index);
  if (ev.shiftKey && S.pos >= 0) {
    const [a, b] = [Math.min(S.pos, i), Math.max(S.pos, i)];
    for (let k = a; k <= b; k++) S.selected.add(k);
  } else if (S.selected.has(i)) S.selected.delete(i); else S.selected.add(i);
  S.pos = i;
  render();
});
$("grid").addEventListener("dblclick", (ev) => {
  const tile = ev.target.closest(".tile");
  if (!tile) return;
  S.pos = Number(tile.dataset.index);
  S.selected.clear();
  setView("single");
});
$("classes").addEventListener("click", (ev) => {
  const state = ev.target.closest(".state");
  if (state) enqueue(() => cycleClass(state.closest(".cls").dataset.cls));
});
$("classes").addEventListener("dblclick", (ev) => {
  const name = ev.target.closest(".name");
  if (name) startRename(name.closest(".cls"), name.closest(".cls").dataset.cls);
});
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
