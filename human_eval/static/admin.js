// Admin page: status, exports and results. The token stays in this tab's sessionStorage and travels
// only in the X-Admin-Token header.
"use strict";

const $ = (id) => document.getElementById(id);
// This study's API: the admin page sits at <study root>/admin (the server's root, or /studies/NAME/).
const BASE = window.location.pathname.replace(/\/admin\/?$/, "");
const TABLES = ["games", "transcripts", "events", "surveys", "participants"];

function showError(text) { $("error").textContent = text; $("error").hidden = !text; }

async function get(path) {
  const response = await fetch(BASE + path, { headers: { "X-Admin-Token": sessionStorage.getItem("parley:admin") || "" } });
  if (!response.ok) {
    let message = `request failed (${response.status})`;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function cell(tag, text) { const c = document.createElement(tag); c.textContent = text === null || text === undefined ? "-" : String(text); return c; }

function table(node, header, rows) {
  node.replaceChildren();
  const head = document.createElement("tr");
  header.forEach((h) => head.append(cell("th", h)));
  node.append(head);
  for (const r of rows) {
    const tr = document.createElement("tr");
    r.forEach((v) => tr.append(cell("td", v)));
    node.append(tr);
  }
}

const pct = (p) => (p === null || p === undefined ? "-" : `${Math.round(100 * p)}%`);
const num = (x) => (x === null || x === undefined ? "-" : Number(x).toFixed(2));

async function load() {
  showError("");
  try {
    const status = await (await get("/api/admin/status")).json();
    $("study-name").textContent = `study: ${status.study}`;
    $("totals").textContent = `${status.participants} participants, ${status.games} negotiations ` +
      `(${status.active_games} active), ${status.surveys} surveys.`;
    table($("status-table"), ["agent", "games", "active", "finished", "deals", "agreement", "mean person score", "mean agent score"],
      Object.entries(status.agents).map(([name, a]) => [name, a.games, a.active, a.finished, a.deals,
        pct(a.agreement_rate), num(a.mean_human_score), num(a.mean_agent_score)]));
    const links = $("exports");
    links.replaceChildren();
    for (const t of TABLES) {
      for (const fmt of ["jsonl", "csv"]) {
        const button = document.createElement("button");
        button.className = "secondary";
        button.textContent = `${t}.${fmt}`;
        button.addEventListener("click", () => download(`${t}.${fmt}`, status.study));
        links.append(button, document.createTextNode(" "));
      }
    }
    const results = await (await get("/api/admin/results")).json();
    table($("results-table"), ["agent", "finished", "agreement", "Pareto-optimal deals", "person score", "agent score", "fair", "human-like", "again"],
      Object.entries(results.summary).map(([name, s]) => [name, s.finished, pct(s.agreement), pct(s.pareto),
        num(s.partner_score.mean), num(s.score.mean), num(s.survey.fair.mean), num(s.survey.human_like.mean),
        num(s.survey.negotiate_again.mean)]));
    const plots = $("plots");
    plots.replaceChildren();
    for (const name of results.plots) {
      const blob = await (await get(`/api/admin/plots/${name}.png`)).blob();
      const img = document.createElement("img");
      img.alt = name;
      img.src = URL.createObjectURL(blob);
      plots.append(img);
    }
    $("status-section").hidden = false;
  } catch (e) { showError(e.message); }
}

async function download(name, study) {
  try {
    const blob = await (await get(`/api/admin/export/${name}`)).blob();
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `${study}-${name}`;
    a.click();
  } catch (e) { showError(e.message); }
}

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("parley:admin", $("admin-token").value);
    load();
  });
  if (sessionStorage.getItem("parley:admin")) load();
});
