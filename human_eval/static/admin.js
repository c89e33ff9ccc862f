// Admin page: status, exports, results, recruitment links, bonuses and game replays. The token stays in this tab's sessionStorage and travels
// only in the X-Admin-Token header.
"use strict";

const $ = (id) => document.getElementById(id);
// This study's API: the admin page sits at <study root>/admin (the server's root, or /studies/NAME/).
const BASE = window.location.pathname.replace(/\/admin\/?$/, "");
const TABLES = ["games", "transcripts", "events", "surveys", "participants"];

function showError(text) { $("error").textContent = text; $("error").hidden = !text; }

async function get(path, options = {}) {
  const headers = { "X-Admin-Token": sessionStorage.getItem("parley:admin") || "", ...(options.headers || {}) };
  const response = await fetch(BASE + path, { ...options, headers });
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
    admin.study = status.study;
    $("bonus-totals").textContent = status.bonus
      ? `${status.bonus.participants} participants earned bonuses, ${status.bonus.total.toFixed(2)} ${status.bonus.currency} in all.`
      : "No bonus rule in this study's config.";
    $("btn-bonuses").disabled = !status.bonus;
    await loadGames();
    $("status-section").hidden = false;
  } catch (e) { showError(e.message); }
}

const admin = { study: "", replay: null, step: 0, links: [] };

function save(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  a.click();
}

async function download(name, study) {
  try { save(await (await get(`/api/admin/export/${name}`)).blob(), `${study}-${name}`); } catch (e) { showError(e.message); }
}

async function downloadFrom(path, name) {
  try { save(await (await get(path)).blob(), `${admin.study}-${name}`); } catch (e) { showError(e.message); }
}

// ------------------------------------------------------------------------------- recruitment links

async function makeLinks(event) {
  event.preventDefault();
  showError("");
  const pids = $("links-pids").value.split("\n").map((x) => x.trim()).filter((x) => x);
  try {
    const response = await get("/api/admin/links", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ pids, base_url: $("links-base").value.trim() }) });
    admin.links = (await response.json()).links;
    table($("links-table"), ["participant id", "link"], admin.links.map((l) => [l.pid, l.url]));
    $("btn-links-csv").hidden = false;
  } catch (e) { showError(e.message); }
}

function linksCsv() {
  const quote = (x) => `"${String(x).replace(/"/g, '""')}"`;
  const rows = ["pid,url", ...admin.links.map((l) => `${quote(l.pid)},${quote(l.url)}`)];
  save(new Blob([rows.join("\n") + "\n"], { type: "text/csv" }), `${admin.study}-links.csv`);
}

// --------------------------------------------------------------------------------------- replay

async function loadGames() {
  const games = (await (await get("/api/admin/games")).json()).games;
  const node = $("games-table");
  table(node, ["game", "participant", "agent", "outcome", "turns", "person score", "agent score", ""],
    games.map((g) => [g.game_id, g.pid, g.agent, g.outcome || "active", g.turns, num(g.human_score), num(g.agent_score), ""]));
  node.querySelectorAll("tr").forEach((tr, i) => {
    if (i === 0) return;
    const button = document.createElement("button");
    button.className = "secondary";
    button.textContent = "Replay";
    button.dataset.game = String(games[i - 1].game_id);
    button.addEventListener("click", () => openReplay(games[i - 1].game_id));
    tr.lastChild.replaceChildren(button);
  });
}

const items = (names, counts) => names.map((n, i) => `${counts[i]} ${n}${counts[i] === 1 ? "" : "s"}`).join(", ");

async function openReplay(gameId) {
  try {
    admin.replay = await (await get(`/api/admin/games/${gameId}/replay`)).json();
    const r = admin.replay;
    $("replay-title").textContent = `Game ${r.game_id}: ${r.pid} vs ${r.agent}`;
    $("replay-context").textContent = `Items: ${items(r.items, r.counts)}. Person's values ${r.human_values.join("/")}, ` +
      `agent's values ${r.agent_values.join("/")}; ${r.human_first ? "the person" : "the agent"} moves first. ` +
      `Outcome: ${r.outcome || "still running"}` + (r.outcome ? ` (person ${num(r.human_score)}, agent ${num(r.agent_score)})` : "");
    $("replay").hidden = false;
    showStep(0);
  } catch (e) { showError(e.message); }
}

function showStep(step) {
  const r = admin.replay;
  admin.step = Math.max(0, Math.min(step, r.steps.length - 1));
  const shown = r.steps.slice(0, admin.step + 1);
  const current = shown[shown.length - 1];
  $("replay-position").textContent = `step ${admin.step + 1} of ${r.steps.length}`;
  const offer = current.standing_offer;
  $("replay-state").textContent = `After turn ${current.turn}: ` + (current.deal_human_gets
    ? `deal, the person gets ${items(r.items, current.deal_human_gets)}.`
    : offer ? `standing offer by the ${offer.by}: the person would get ${items(r.items, offer.human_gets)}.` : "no offer on the table.");
  table($("replay-table"), ["#", "time s", "who", "event", "person gets", "agent gets", "words", "message"],
    shown.map((s) => [s.seq, s.t_s.toFixed(1), s.actor, s.act || s.kind, s.human_gets ? s.human_gets.join(" ") : "",
      s.agent_gets ? s.agent_gets.join(" ") : "", s.text, s.message]));
  $("btn-prev").disabled = $("btn-first").disabled = admin.step === 0;
  $("btn-next").disabled = $("btn-last").disabled = admin.step === r.steps.length - 1;
}

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("parley:admin", $("admin-token").value);
    load();
  });
  $("links-base").value = window.location.origin + BASE + "/";
  $("links-form").addEventListener("submit", makeLinks);
  $("btn-links-csv").addEventListener("click", linksCsv);
  $("btn-bonuses").addEventListener("click", () => downloadFrom("/api/admin/bonuses.csv", "bonuses.csv"));
  $("btn-corpus").addEventListener("click", () => downloadFrom("/api/admin/corpus.txt", "data.txt"));
  $("btn-first").addEventListener("click", () => showStep(0));
  $("btn-prev").addEventListener("click", () => showStep(admin.step - 1));
  $("btn-next").addEventListener("click", () => showStep(admin.step + 1));
  $("btn-last").addEventListener("click", () => showStep(admin.replay.steps.length - 1));
  if (sessionStorage.getItem("parley:admin")) load();
});
