// Expert-oracle page: answer queued negotiation states. Text is inserted with textContent only.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { query: null, skipped: [] };

function showError(text) { $("error").textContent = text; $("error").hidden = !text; }

async function call(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { "Content-Type": "application/json", "X-Oracle-Token": sessionStorage.getItem("parley:oracle") || "" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await response.json(); } catch (_) { data = null; }
  if (!response.ok) throw new Error((data && data.error) || `request failed (${response.status})`);
  return data;
}

function td(text) { const c = document.createElement("td"); c.textContent = String(text); return c; }

function render(q) {
  state.query = q;
  $("query").hidden = !q;
  $("empty").hidden = !!q;
  if (!q) return;
  $("turn").textContent = `Turn ${q.turn} of ${q.max_turns}.`;
  const body = $("items-body");
  body.replaceChildren();
  q.items.forEach((item, i) => {
    const row = document.createElement("tr");
    row.append(td(item.name), td(item.count), td(item.your_value), td(item.their_value));
    const cell = document.createElement("td");
    const select = document.createElement("select");
    select.id = `keep-${i}`;
    for (let k = 0; k <= item.count; k++) {
      const o = document.createElement("option");
      o.value = String(k);
      o.textContent = String(k);
      select.append(o);
    }
    cell.append(select);
    row.append(cell);
    body.append(row);
  });
  const list = $("history");
  list.replaceChildren();
  for (const h of q.history) {
    const li = document.createElement("li");
    li.className = h.speaker === "you" ? "you" : "partner";
    li.textContent = `${h.speaker === "you" ? "You" : "Them"}: ${h.text}`;
    list.append(li);
  }
  $("standing").hidden = !q.standing_offer;
  $("standing").textContent = q.standing_offer
    ? `Their offer gives you ${q.standing_offer.you_get.map((k, i) => `${k} ${q.items[i].name}${k === 1 ? "" : "s"}`)
      .join(", ")} (${q.standing_offer.your_points} points for you).` : "";
  $("acceptable").disabled = !q.standing_offer;
  $("acceptable").checked = false;
  $("btn-agree").disabled = !q.can_agree;
}

async function next() {
  try {
    const data = await call("GET", `/api/oracle/next?skip=${encodeURIComponent(state.skipped.join(","))}`);
    $("queue-stats").textContent = `${data.stats.pending} pending, ${data.stats.answered} answered`;
    $("login").hidden = true;
    render(data.query);
  } catch (e) { showError(e.message); }
}

async function answer(kind) {
  if (!state.query) return;
  const body = { kind, annotator: $("annotator").value || sessionStorage.getItem("parley:annotator") || "" };
  if (kind === "propose" || kind === "insist") body.split = state.query.items.map((_, i) => Number($(`keep-${i}`).value));
  if (state.query.standing_offer) body.acceptable = $("acceptable").checked;
  try {
    const data = await call("POST", `/api/oracle/${state.query.query_id}/answer`, body);
    showError("");
    $("status").textContent = `Saved: ${data.text}`;
    await next();
  } catch (e) { showError(e.message); }
}

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("parley:oracle", $("oracle-token").value);
    sessionStorage.setItem("parley:annotator", $("annotator").value);
    next();
  });
  $("btn-propose").addEventListener("click", () => answer("propose"));
  $("btn-insist").addEventListener("click", () => answer("insist"));
  $("btn-agree").addEventListener("click", () => answer("agree"));
  $("btn-walk").addEventListener("click", () => answer("walk_away"));
  $("btn-skip").addEventListener("click", () => { if (state.query) state.skipped.push(state.query.query_id); next(); });
  $("btn-reload").addEventListener("click", () => { state.skipped = []; next(); });
  if (sessionStorage.getItem("parley:oracle")) next();
});
