// The server: every request names this page's client; every change also carries the token.

import {S} from "./state.js";

const TOKEN = document.querySelector('meta[name="patchcfg-token"]').content;
const CLIENT = sessionStorage.getItem("patchcfg-client") || (() => {
  const id = "c" + Math.random().toString(36).slice(2, 12);
  sessionStorage.setItem("patchcfg-client", id);
  return id;
})();

export async function api(method, path, body) {
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
