"use strict";
// Shared by the submit and job pages (page.py inlines it). Reads go with the browser's credentials (basic auth, as on
// /status); writes need a bearer key (the gate refuses basic auth for writes), which the operator enters once per tab:
// it is kept in sessionStorage (this tab only, gone when it closes), never in the page, a cookie or a URL.
const KEY_SLOT = "yoloq.apiKey";
const TIERS = ["critical", "high", "medium", "low", "batch"];

function $(id) { return document.getElementById(id); }
function say(id, text, bad) {
  const el = $(id);
  el.textContent = text;  // every string from the API is text, never markup
  el.className = bad ? "bad" : "ok";
}
function cell(value, cls) {
  const td = document.createElement("td");
  td.textContent = value === null || value === undefined || value === "" ? "—" : String(value);
  if (cls) td.className = cls;
  return td;
}
function fill(id, rows) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren(...rows.map(cells => { const tr = document.createElement("tr"); tr.append(...cells); return tr; }));
}
function jobLink(jobId) {
  const a = document.createElement("a");
  a.href = "/jobs/" + encodeURIComponent(jobId);
  a.textContent = jobId;
  return a;
}
function apiKey() { return sessionStorage.getItem(KEY_SLOT) || ""; }

async function call(method, path, body) {
  // -> {ok, status, doc}; doc.error is the API's one-line reason (the line the CLI prints after "yoloq: error: ")
  const headers = {Accept: "application/json"};
  if (method !== "GET") {
    if (!apiKey()) return {ok: false, status: 0, doc: {error: "enter an API key above first (actions need a bearer key)"}};
    headers.Authorization = `Bearer ${apiKey()}`;
    headers["Content-Type"] = "application/json";
  }
  let res;
  try {
    // location.origin: a page opened as http://user:key@host/ must not pass its credentials in fetch URLs
    res = await fetch(location.origin + path, {method, headers, credentials: "same-origin",
                                                body: body === undefined ? undefined : JSON.stringify(body)});
  } catch (err) {
    return {ok: false, status: 0, doc: {error: `the API did not answer: ${err.message}`}};
  }
  let doc;
  try { doc = await res.json(); } catch (err) { doc = {}; }
  if (!res.ok && !(doc && typeof doc.error === "string")) doc = {error: `HTTP ${res.status}`};
  return {ok: res.ok, status: res.status, doc};
}

function keyBox() {
  const shown = () => say("key-state", apiKey() ? "a key is set for this tab" : "no key: reads only", !apiKey());
  $("key-use").addEventListener("click", () => {
    const value = $("key").value.trim();
    if (value) sessionStorage.setItem(KEY_SLOT, value);
    $("key").value = "";
    shown();
  });
  $("key-forget").addEventListener("click", () => { sessionStorage.removeItem(KEY_SLOT); shown(); });
  shown();
}
