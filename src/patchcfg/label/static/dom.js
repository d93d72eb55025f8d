// The page's small DOM tools: an element by id, HTML escaping, the message log.

export const $ = (id) => document.getElementById(id);

export function say(text, level) {
  const line = document.createElement("div");
  line.className = level || "info";
  line.textContent = text;
  const log = $("log");
  log.prepend(line);
  while (log.children.length > 6) log.lastChild.remove();
  if (level === "error") setTimeout(() => line.remove(), 15000); else setTimeout(() => line.remove(), 5000);
}

export async function guarded(work) {
  try { return await work(); } catch (e) { say(e.message, "error"); }
}

export function esc(text) {
  const named = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"};
  return String(text).replace(/[&<>"']/g, (ch) => named[ch]);
}
