// The review page: one suspect at a time from /review/<target>/queue, answers posted to /review/<target>/decisions.
// Catalogue text reaches the page only through textContent, never as HTML: a title may hold anything.
"use strict";

const target = decodeURIComponent(location.pathname.split("/")[2] || "");
const base = "/review/" + encodeURIComponent(target);
const TOKEN_KEY = "mmgbm-review-token";
const NAME_KEY = "mmgbm-reviewer";
const REFILL_BELOW = 5; // fetch more suspects when fewer than this wait in the page
const MATCHES_SHOWN = 12;

let classes = [];
let waiting = [];
const seen = new Set(); // shown in this page (answered or skipped): not shown again
let current = null;
let busy = false;
let matches = [];
let highlighted = 0;

const $ = (id) => document.getElementById(id);

function text(id, value) {
  $(id).textContent = value;
}

function showProgress(counts) {
  text("progress", `${counts.left} left to review · ${counts.decided} decided · ${counts.suspects} suspects`);
}

async function refill() {
  const response = await fetch(`${base}/queue?limit=50`);
  const body = await response.json();
  if (!response.ok) {
    text("status", body.detail);
    return;
  }
  classes = body.classes;
  showProgress(body);
  const queued = new Set(waiting.map((s) => s.id));
  for (const suspect of body.queue) {
    if (!seen.has(suspect.id) && !queued.has(suspect.id)) waiting.push(suspect);
  }
}

function showNext() {
  closePicker();
  current = waiting.shift() || null;
  if (current === null) {
    $("card").hidden = true;
    $("done").hidden = false;
    text("done", `No suspects left to review here. Retrain (mmgbm train -t ${target}) to learn from the answers.`);
    text("next-up", "");
    return;
  }
  seen.add(current.id);
  $("card").hidden = false;
  $("done").hidden = true;
  text("title", current.title);
  text("product-id", current.id);
  text("given", current.given);
  text("suggested", current.suggested);
  text("keep-label", current.given);
  text("take-label", current.suggested);
  text("confidence", current.confidence.toFixed(2));
  text("modality", current.modality);
  const photo = $("photo");
  photo.hidden = current.photo === null;
  $("no-photo").hidden = current.photo !== null;
  if (current.photo !== null) photo.src = current.photo;
  const list = $("next-up");
  list.replaceChildren(...waiting.slice(0, 3).map((s) => {
    const item = document.createElement("li");
    item.textContent = `${s.title} (${s.given} → ${s.suggested})`;
    return item;
  }));
}

async function advance() {
  if (waiting.length < REFILL_BELOW) await refill();
  showNext();
}

async function decide(label) {
  if (busy || current === null) return;
  busy = true;
  const answered = current;
  try {
    const response = await post({id: answered.id, decided: label, by: $("reviewer").value.trim()});
    const body = await response.json();
    if (!response.ok) {
      text("status", `Not recorded: ${body.detail}`);
      return;
    }
    text("status", `Recorded ${answered.id}: ${label}`);
    showProgress(body);
    await advance();
  } catch (error) {
    text("status", `Not recorded (${error}); is mmgbm review still running?`);
  } finally {
    busy = false;
  }
}

async function post(answer) {
  for (let attempt = 0; ; attempt++) {
    const headers = {"Content-Type": "application/json"};
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers["X-Review-Token"] = token;
    const response = await fetch(`${base}/decisions`, {method: "POST", headers, body: JSON.stringify(answer)});
    if (response.status !== 401 || attempt > 0) return response;
    const given = prompt("This review service needs its token (MMGBM_REVIEW_TOKEN):");
    if (!given) return response;
    sessionStorage.setItem(TOKEN_KEY, given);
  }
}

function openPicker() {
  if (current === null) return;
  $("picker").hidden = false;
  const search = $("search");
  search.value = "";
  filter();
  search.focus();
}

function closePicker() {
  $("picker").hidden = true;
  if (document.activeElement === $("search")) $("search").blur();
}

function filter() {
  const words = $("search").value.toLowerCase().split(/\s+/).filter(Boolean);
  // Labels holding every word typed; those that start with the first word first, then those with a word that does.
  const rank = (label) => {
    const lower = label.toLowerCase();
    if (!words.length || lower.startsWith(words[0])) return 0;
    return lower.split(/\s+/).some((w) => w.startsWith(words[0])) ? 1 : 2;
  };
  matches = classes.filter((c) => words.every((w) => c.toLowerCase().includes(w)))
    .map((label, i) => [rank(label), i, label]).sort((a, b) => a[0] - b[0] || a[1] - b[1])
    .map((ranked) => ranked[2]).slice(0, MATCHES_SHOWN);
  highlighted = 0;
  drawMatches();
}

function drawMatches() {
  $("matches").replaceChildren(...matches.map((label, i) => {
    const item = document.createElement("li");
    item.textContent = label;
    item.setAttribute("role", "option");
    item.setAttribute("aria-selected", String(i === highlighted));
    item.addEventListener("click", () => decide(label));
    return item;
  }));
}

function onSearchKey(event) {
  if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    const step = event.key === "ArrowDown" ? 1 : -1;
    highlighted = Math.max(0, Math.min(matches.length - 1, highlighted + step));
    drawMatches();
    event.preventDefault();
  } else if (event.key === "Enter" && matches.length) {
    decide(matches[highlighted]);
    event.preventDefault();
  } else if (event.key === "Escape") {
    closePicker();
  }
}

function onKey(event) {
  const typing = event.target instanceof HTMLInputElement;
  if (typing || event.ctrlKey || event.metaKey || event.altKey || current === null) return;
  const key = event.key.toLowerCase();
  if (key === "k") decide(current.given);
  else if (key === "a") decide(current.suggested);
  else if (key === "o" || key === "/") openPicker();
  else if (key === "s") advance();
  else return;
  event.preventDefault();
}

async function start() {
  text("target", target);
  document.title = `mmgbm review: ${target}`;
  $("reviewer").value = localStorage.getItem(NAME_KEY) || "";
  $("reviewer").addEventListener("change", () => localStorage.setItem(NAME_KEY, $("reviewer").value.trim()));
  $("keep").addEventListener("click", () => current && decide(current.given));
  $("take").addEventListener("click", () => current && decide(current.suggested));
  $("other").addEventListener("click", openPicker);
  $("skip").addEventListener("click", advance);
  $("search").addEventListener("input", filter);
  $("search").addEventListener("keydown", onSearchKey);
  $("photo").addEventListener("error", () => {
    $("photo").hidden = true;
    $("no-photo").hidden = false;
  });
  document.addEventListener("keydown", onKey);
  await advance();
  document.body.dataset.ready = "true"; // for tests and scripts: the first suspect is on the page
}

start();
