// The side panels: progress and learning (curve, stop rule, metrics, jobs) and their layout; the
// header's selects; retrain, save and finetune jobs.

import {$, guarded, say} from "./dom.js";
import {S, enqueue} from "./state.js";
import {api} from "./api.js";

export async function loadState() {
  const st = await api("GET", "/api/state");
  const first = !S.state;
  S.state = st;
  S.generation = st.generation;
  S.seq = Math.max(S.seq, st.seq);
  if (first) fillSelects();
  renderProgress();
  return st;
}

export function fillSelects() {
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

export function renderProgress() {
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

export async function startJob() {
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
export function refreshStateSoon() {
  clearTimeout(stateTimer);
  stateTimer = setTimeout(() => guarded(loadState), 700);
}

// The side panels in two columns (labels | progress and learning) when in one column the progress
// would end below the window (many classes) and the window is wide enough to keep the image beside them.
const TWO_PANELS_MIN_WIDTH = 1240;

export function fitPanels() {
  const main = document.querySelector("main"), aside = document.querySelector("aside");
  const two = main.classList.contains("two-panels");
  if (two) main.classList.remove("two-panels");  // measure the one-column layout
  const box = $("progress-box");  // its offsetParent is the aside
  const below = box.offsetTop + box.offsetHeight > aside.clientHeight;
  const wanted = below && window.innerWidth >= TWO_PANELS_MIN_WIDTH;
  main.classList.toggle("two-panels", wanted);
}

export async function retrain() {
  await guarded(async () => {
    say("retraining the quick head…");
    const r = await api("POST", "/api/retrain", {});
    const auc = r.metrics.val_macro_auc;
    say(`model v${r.version} ready` + (auc != null ? ` (val macro AUC ${auc.toFixed(3)})` : ""));
    await loadState();
  });
}

export async function save() {
  await guarded(async () => {
    const r = await api("POST", "/api/flush", {});
    say(r.written ? "table written" : r.error, r.written ? "info" : "error");
    await loadState();
  });
}
