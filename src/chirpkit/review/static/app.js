// chirpkit review page: plain JS over the JSON API (no build step, nothing fetched from elsewhere).
"use strict";

const TOKEN = document.querySelector('meta[name="chirpkit-token"]').content;
const $ = (id) => document.getElementById(id);
const S = { session: null, queue: [], pos: -1, undo: [], trail: [] };

async function api(path, options = {}) {
  const opts = { credentials: "same-origin", ...options };
  opts.headers = { "X-Chirpkit-Token": TOKEN, ...(options.headers || {}) };
  if (opts.body !== undefined) opts.headers["Content-Type"] = "application/json";
  const resp = await fetch(path, opts);
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(data.error || `HTTP ${resp.status}`);
  return data;
}

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function option(select, value, text) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text;
  select.appendChild(o);
}

const FILTERS = ["f-strategy", "f-label", "f-file", "f-min", "f-max", "f-reviewed"];

function saveFilters() {
  const f = {};
  for (const id of FILTERS) f[id] = $(id).value;
  localStorage.setItem("chirpkit-review-filters:" + S.session.folder, JSON.stringify(f));
}

function restoreFilters() {
  const f = JSON.parse(localStorage.getItem("chirpkit-review-filters:" + S.session.folder) || "{}");
  for (const id of FILTERS) if (f[id] !== undefined) $(id).value = f[id];
}

function query() {
  const q = new URLSearchParams({ limit: "5000" });
  q.set("strategy", $("f-strategy").value);
  if ($("f-label").value) q.set("label", $("f-label").value);
  if ($("f-file").value) q.set("file", $("f-file").value);
  if ($("f-min").value) q.set("min_score", $("f-min").value);
  if ($("f-max").value) q.set("max_score", $("f-max").value);
  q.set("reviewed", $("f-reviewed").value);
  return q;
}

function renderQueue() {
  const ol = $("queue");
  ol.textContent = "";
  S.queue.forEach((it, i) => {
    const li = document.createElement("li");
    li.dataset.id = it.id;
    if (it.verdict) li.dataset.verdict = it.verdict;
    li.textContent = `${it.label} ${it.score.toFixed(3)} · ${it.file} ${it.start_s.toFixed(1)} s`;
    li.addEventListener("click", () => show(i));
    ol.appendChild(li);
  });
  $("queue-count").textContent = `(${S.queue.length})`;
}

async function loadQueue(keepId = null) {
  const data = await api("/api/items?" + query().toString());
  S.queue = data.items;
  renderQueue();
  let i = keepId ? S.queue.findIndex((it) => it.id === keepId) : -1;
  if (i < 0) i = S.queue.findIndex((it) => !it.verdict);
  if (i < 0) i = S.queue.length ? 0 : -1;
  await show(i, false);
}

async function loadProgress() {
  const data = await api("/api/progress");
  const body = $("progress").querySelector("tbody");
  body.textContent = "";
  for (const c of data.classes) {
    const tr = document.createElement("tr");
    for (const v of [c.label, `${c.queued_reviewed}/${c.queued}`, c.accepted, c.rejected, c.relabelled]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
}

function current() {
  return S.pos >= 0 ? S.queue[S.pos] : null;
}

async function show(i, remember = true) {
  const prev = current();
  if (remember && prev && (!S.trail.length || S.trail[S.trail.length - 1] !== S.pos)) S.trail.push(S.pos);
  S.pos = i;
  document.querySelectorAll("#queue li.current").forEach((li) => li.classList.remove("current"));
  const it = current();
  hideRelabel();
  if (!it) {
    for (const id of ["i-label", "i-score", "i-file", "i-time", "i-verdict", "pos"]) $(id).textContent = "";
    $("spec").removeAttribute("src");
    $("player").removeAttribute("src");
    status(S.queue.length ? "" : "Nothing to review with these filters.");
    return;
  }
  const li = $("queue").children[i];
  if (li) {
    li.classList.add("current");
    li.scrollIntoView({ block: "nearest" });
  }
  $("pos").textContent = `${i + 1} / ${S.queue.length}`;
  $("i-label").textContent = it.label;
  $("i-score").textContent = `score ${it.score.toFixed(3)}`;
  $("i-file").textContent = it.file;
  $("i-time").textContent = `${it.start_s.toFixed(2)}–${it.end_s.toFixed(2)} s`;
  showVerdict(it);
  $("spec").src = `/api/items/${it.id}/spectrogram.png`;
  const player = $("player");
  player.src = `/api/items/${it.id}/audio`;
  document.body.dataset.item = it.id;
  status("");
  if ($("autoplay").checked) player.play().catch(() => {});
}

function showVerdict(it) {
  const b = $("i-verdict");
  b.className = "badge " + (it.verdict || "");
  b.textContent = it.verdict ? it.verdict + (it.verdict === "relabel" && it.new_label ? ` → ${it.new_label}` : "") : "not reviewed";
  const li = $("queue").querySelector(`li[data-id="${it.id}"]`);
  if (li) {
    if (it.verdict) li.dataset.verdict = it.verdict;
    else delete li.dataset.verdict;
  }
}

async function post(it, verdict, label) {
  const body = { id: it.id, verdict, reviewer: $("reviewer").value.trim() };
  if (label !== undefined) body.label = label;
  const data = await api("/api/reviews", { method: "POST", body: JSON.stringify(body) });
  const r = data.item.review;
  it.verdict = r ? r.verdict : null;
  it.new_label = r ? r.label : null;
  showVerdict(it);
  return data;
}

async function decide(verdict, label) {
  const it = current();
  if (!it) return;
  const before = { verdict: it.verdict, label: it.new_label };
  try {
    await post(it, verdict, label);
  } catch (e) {
    status(`not saved: ${e.message}`, true);
    return;
  }
  S.undo.push({ id: it.id, before });
  status(`saved: ${verdict}${label ? " → " + label : ""}`);
  loadProgress().catch(() => {});
  if ($("f-strategy").value === "uncertainty") {
    S.trail.push(S.pos);
    await loadQueue(null); // the order is re-fitted on every review
  } else {
    next();
  }
}

async function undo() {
  const last = S.undo.pop();
  if (!last) return status("nothing to undo");
  const i = S.queue.findIndex((it) => it.id === last.id);
  const it = i >= 0 ? S.queue[i] : { id: last.id };
  const b = last.before;
  try {
    if (b.verdict) await post(it, b.verdict, b.verdict === "relabel" ? b.label : undefined);
    else await post(it, "clear");
  } catch (e) {
    return status(`undo failed: ${e.message}`, true);
  }
  if (i >= 0) await show(i);
  status("undone");
  loadProgress().catch(() => {});
}

function next() {
  if (S.pos + 1 < S.queue.length) show(S.pos + 1);
  else status("end of the queue");
}

function previous() {
  const back = S.trail.pop();
  if (back !== undefined && back < S.queue.length) show(back, false);
  else if (S.pos > 0) show(S.pos - 1, false);
}

function replay() {
  const p = $("player");
  if (!p.src) return;
  p.currentTime = 0;
  p.play().catch((e) => status(`cannot play: ${e.message}`, true));
}

function showRelabel() {
  if (!current()) return;
  $("relabel").hidden = false;
  $("relabel-input").value = "";
  $("relabel-input").focus();
}

function hideRelabel() {
  $("relabel").hidden = true;
}

function typing(e) {
  const t = e.target;
  return t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA");
}

document.addEventListener("keydown", (e) => {
  if (e.key === "Escape") return hideRelabel();
  if (typing(e) || e.ctrlKey || e.metaKey || e.altKey) return;
  const actions = {
    a: () => decide("accept"),
    r: () => decide("reject"),
    l: showRelabel,
    s: next,
    ArrowRight: next,
    ArrowLeft: previous,
    u: undo,
    " ": replay,
  };
  const act = actions[e.key];
  if (act) {
    e.preventDefault();
    act();
  }
});

async function init() {
  S.session = await api("/api/session");
  for (const s of S.session.strategies) option($("f-strategy"), s, s);
  $("f-strategy").value = S.session.strategy;
  for (const c of S.session.classes) option($("f-label"), c, c);
  for (const f of S.session.files) option($("f-file"), f, f);
  for (const c of S.session.label_choices) option($("labels"), c, c);
  restoreFilters();
  $("reviewer").value = localStorage.getItem("chirpkit-reviewer") || S.session.reviewer || "";
  $("reviewer").addEventListener("change", () => localStorage.setItem("chirpkit-reviewer", $("reviewer").value.trim()));
  for (const id of FILTERS)
    $(id).addEventListener("change", () => {
      saveFilters();
      loadQueue().catch((e) => status(e.message, true));
    });
  $("b-prev").onclick = previous;
  $("b-next").onclick = next;
  $("b-play").onclick = replay;
  $("b-accept").onclick = () => decide("accept");
  $("b-reject").onclick = () => decide("reject");
  $("b-relabel").onclick = showRelabel;
  $("b-undo").onclick = undo;
  $("relabel-cancel").onclick = hideRelabel;
  $("relabel").addEventListener("submit", (e) => {
    e.preventDefault();
    const label = $("relabel-input").value.trim();
    if (!label) return status("type or pick a label", true);
    hideRelabel();
    decide("relabel", label);
  });
  const player = $("player");
  player.addEventListener("playing", () => (document.body.dataset.played = document.body.dataset.item || ""));
  $("spec").addEventListener("error", () => current() && status("no spectrogram: the recording could not be read", true));
  await loadProgress();
  await loadQueue();
}

init().catch((e) => status(`cannot load: ${e.message}`, true));
