// The search page: plain JS over the JSON API (/api/health, /api/search). No build step, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
let columns = {};      // modality -> the metadata field holding its path or caption
let uploads = {};      // media modality the model embeds -> its file input's accept list
const PLAYERS = {image: "img", audio: "audio", video: "video"};  // modality -> the element showing its file
let like = null;       // {row, modality}: "more like this"

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function health() {
  const r = await fetch("/api/health");
  const h = await r.json();
  columns = h.columns || {};
  uploads = h.uploads || {};
  for (const [m, accept] of Object.entries(uploads)) {
    $("uploads").append(el("label", {}, `${m[0].toUpperCase()}${m.slice(1)} `,
      el("input", {id: `upload-${m}`, name: m, type: "file", accept})));
  }
  const counts = Object.entries(h.modalities).map(([m, n]) => `${n} ${m}`).join(", ");
  $("status").textContent = `${h.rows} rows: ${counts}`;
  for (const m of Object.keys(h.modalities)) {
    $("modalities").append(el("label", {}, el("input", {type: "checkbox", name: "modality", value: m}), ` ${m}`));
  }
  $("modalities").append(el("span", {class: "hint"}, "(none ticked: the modalities the query does not use)"));
}

function setLike(value) {
  like = value;
  $("like").hidden = !like;
  $("like").replaceChildren();
  if (like) {
    $("like").append(`like row ${like.row} (${like.modality}) `,
      el("button", {type: "button", title: "drop it from the query", onclick: () => setLike(null)}, "×"));
  }
}

function card(hit, modality) {
  const c = el("div", {class: "card", "data-row": hit.row});
  const media = hit.media || {};
  for (const [m, url] of Object.entries(media)) {
    const tag = PLAYERS[m];
    if (tag === "img") c.append(el("img", {src: url, alt: `row ${hit.row}`, loading: "lazy"}));
    else if (tag) c.append(el(tag, {src: url, controls: "", preload: tag === "video" ? "metadata" : "none"}));
    else c.append(el("a", {href: url, download: ""}, `${m} file`));
  }
  const caption = hit[columns.text || "text"];
  if (caption) c.append(el("div", {class: "caption"}, caption));
  const shown = new Set(["rank", "score", "row", "media", "text", ...Object.keys(media), ...Object.values(columns)]);
  const rest = Object.entries(hit).filter(([k, v]) => !shown.has(k) && v !== null && v !== "" && typeof v !== "object");
  c.append(el("div", {class: "meta"}, el("span", {class: "score"}, hit.score.toFixed(3)), ` #${hit.rank} · row ${hit.row}`,
    ...rest.map(([k, v]) => ` · ${k}: ${v}`)));
  c.append(el("button", {type: "button", class: "more", onclick: () => moreLikeThis(hit.row, modality)}, "more like this"));
  return c;
}

function render(answer) {
  const main = $("results");
  main.replaceChildren();
  for (const [modality, hits] of Object.entries(answer.results)) {
    const grid = el("div", {class: "grid", "data-modality": modality}, ...hits.map((h) => card(h, modality)));
    main.append(el("section", {}, el("h2", {}, `${modality}: ${hits.length} results`), grid));
  }
  main.setAttribute("data-done", String(Date.now()));
}

async function runSearch() {
  const form = new FormData();
  const text = $("text").value.trim();
  if (text) form.append("text", text);
  for (const m of Object.keys(uploads)) if ($(`upload-${m}`).files.length) form.append(m, $(`upload-${m}`).files[0]);
  if (like) { form.append("like", like.row); form.append("like_modality", like.modality); }
  const wanted = [...document.querySelectorAll("input[name=modality]:checked")].map((i) => i.value);
  if (wanted.length) form.append("modality", wanted.join(","));
  form.append("k", $("k").value || "10");
  $("go").disabled = true;
  try {
    const r = await fetch("/api/search", {method: "POST", body: form});
    const answer = await r.json();
    if (!r.ok) { showError(answer.detail || `error ${r.status}`); return; }
    showError("");
    render(answer);
  } catch (e) {
    showError(`the server did not answer (${e})`);
  } finally {
    $("go").disabled = false;
  }
}

function moreLikeThis(row, modality) {
  $("text").value = "";
  for (const m of Object.keys(uploads)) $(`upload-${m}`).value = "";
  setLike({row, modality});
  window.scrollTo(0, 0);
  runSearch();
}

function clearAll() {
  $("query").reset();
  setLike(null);
  showError("");
  $("results").replaceChildren();
}

function dropFiles(files) {
  for (const f of files) {
    const dot = f.name.lastIndexOf(".");
    const suffix = dot >= 0 ? f.name.slice(dot).toLowerCase() : "";
    const kind = Object.keys(uploads).find((m) => f.type.startsWith(`${m}/`) || uploads[m].split(",").includes(suffix));
    if (!kind) { showError(`${f.name}: not a file of ${Object.keys(uploads).join(", ") || "any kind"} this model embeds`); continue; }
    const dt = new DataTransfer();
    dt.items.add(f);
    $(`upload-${kind}`).files = dt.files;
  }
}

$("query").addEventListener("submit", (e) => { e.preventDefault(); runSearch(); });
$("clear").addEventListener("click", clearAll);
const drop = $("drop");
for (const ev of ["dragenter", "dragover"]) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
for (const ev of ["dragleave", "drop"]) drop.addEventListener(ev, () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); dropFiles(e.dataTransfer.files); });
// a file dropped anywhere else is taken as a query too, instead of the browser leaving the page for it
document.addEventListener("dragover", (e) => e.preventDefault());
document.addEventListener("drop", (e) => { if (!drop.contains(e.target)) { e.preventDefault(); dropFiles(e.dataTransfer.files); } });
health().catch((e) => showError(`cannot reach the server (${e})`));
