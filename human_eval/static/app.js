// Participant page of a parley study. Plain DOM code, no build step. All text from the server is
// inserted with textContent, never as HTML.
"use strict";

const ITEM_LABELS = { book: "Books", hat: "Hats", ball: "Balls" };
const STAGES = ["login", "consent", "instructions", "comprehension", "screened_out", "ready", "negotiation", "survey",
                "done", "returned", "refused"];
const $ = (id) => document.getElementById(id);
// Where this study's API lives: the page's own folder (the server's root, or /studies/NAME/ on a server
// that hosts several studies).
const BASE = window.location.pathname.replace(/\/$/, "");

const app = { token: null, state: null, game: null, timer: null, deadline: 0, busy: false, walkArmed: false,
              completion: null };

// The link's parameters: a study link (study, pid, sig) or a crowd platform's (Prolific's PROLIFIC_PID,
// STUDY_ID and SESSION_ID; MTurk's workerId, hitId and assignmentId).
function params() {
  const q = new URLSearchParams(window.location.search);
  const link = { study: q.get("study"), pid: q.get("pid") || q.get("PROLIFIC_PID") || q.get("workerId") };
  const extra = { sig: q.get("sig"), study_id: q.get("STUDY_ID") || q.get("hitId"),
                  session_id: q.get("SESSION_ID") || q.get("assignmentId") };
  for (const [k, v] of Object.entries(extra)) if (v) link[k] = v;
  return link;
}

function showError(text) {
  const box = $("error");
  box.textContent = text;
  box.hidden = !text;
}

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (app.token) headers["X-Session-Token"] = app.token;
  const response = await fetch(BASE + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await response.json(); } catch (_) { data = null; }
  if (!response.ok) {
    const message = (data && data.error) || `request failed (${response.status})`;
    const err = new Error(message);
    err.status = response.status;
    throw err;
  }
  return data;
}

function showStage(name) {
  for (const s of STAGES) $(`stage-${s}`).hidden = s !== name;
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function describe(items, counts) {
  const parts = [];
  items.forEach((k, i) => {
    if (k > 0) parts.push(`${k} ${counts[i].name}${k === 1 ? "" : "s"}`);
  });
  return parts.length ? parts.join(", ") : "nothing";
}

// ------------------------------------------------------------------------------------------ flow

function render(state) {
  app.state = state;
  $("who").textContent = state.pid ? `Participant ${state.pid}` : "";
  const text = state.protocol === "text";
  $("rules-acts").hidden = text;
  $("rules-text").hidden = !text;
  if (state.stage === "negotiation") {
    renderGame(state.game);
    showStage("negotiation");
    return;
  }
  if (state.stage === "survey") {
    const g = state.game;
    $("survey-outcome").textContent = g ? outcomeText(g) : "";
    $("attention-item").hidden = !state.attention_question;
    $("attention-question").textContent = state.attention_question || "";
    showStage("survey");
    return;
  }
  if (state.stage === "done" || (state.stage === "ready" && state.completed > 0)) {
    renderDone(state);
    return;
  }
  if (state.stage === "comprehension") renderComprehension(state.comprehension);
  showStage(state.stage);
}

// The completion code comes once, with the survey's answer; a resumed finished session shows a note.
function renderDone(state) {
  const c = app.completion;
  const code = c ? (c.platform_code || c.completion_code) : "";
  $("code-box").hidden = !code;
  $("completion-code").textContent = code;
  $("code-hint").textContent = state.platform === "mturk" ? "Paste this code into the HIT on Mechanical Turk."
    : "Copy this code back into the study platform.";
  $("finished-note").hidden = Boolean(code);
  $("redirect-note").hidden = !(c && c.redirect_url);
  if (c && c.redirect_url) {
    $("redirect-link").href = c.redirect_url;
    setTimeout(() => window.location.assign(c.redirect_url), 2000);
  }
  $("btn-again").hidden = !(state.stage === "ready");
  showStage("done");
}

function renderComprehension(info) {
  const form = $("comprehension-form");
  $("comprehension-tries").textContent = `Tries left: ${info.tries_left}.`;
  if (form.childElementCount) return;
  for (const q of info.questions) {
    const fs = el("fieldset");
    fs.dataset.q = q.id;
    fs.append(el("legend", null, q.question));
    q.options.forEach((text, i) => {
      const label = el("label");
      const input = el("input");
      input.type = "radio";
      input.name = `cq-${q.id}`;
      input.value = String(i);
      input.id = `cq-${q.id}-${i}`;
      label.append(input, document.createTextNode(` ${text}`));
      fs.append(label);
    });
    form.append(fs);
  }
}

async function submitComprehension(event) {
  event.preventDefault();
  const answers = {};
  for (const fs of $("comprehension-form").querySelectorAll("fieldset")) {
    const chosen = fs.querySelector("input:checked");
    if (!chosen) { showError("Please answer every question."); return; }
    answers[fs.dataset.q] = Number(chosen.value);
  }
  try {
    showError("");
    const data = await api("POST", "/api/comprehension", { answers });
    $("comprehension-feedback").textContent = data.passed ? "" :
      `Not quite: ${data.wrong.length} answer(s) are wrong. Read the rules again and try once more.`;
    if (!data.passed && data.state.stage === "comprehension") {
      const rules = $("stage-instructions").querySelector("ul:not([hidden])").cloneNode(true);
      $("comprehension-feedback").append(rules);
    }
    render(data.state);
    if (data.passed && data.state.stage === "ready") await step("/api/games");
  } catch (e) { showError(e.message); }
}

async function leaveStudy() {
  try {
    const data = await api("POST", "/api/leave", {});
    $("returned-code").textContent = data.platform_code || "";
    $("returned-text").textContent = data.platform_code
      ? "Thank you for your time. Please return the study on the platform with this code:" : "Thank you for your time.";
    render(data.state);
  } catch (e) { showError(e.message); }
}

async function enter(link) {
  try {
    const data = await api("POST", "/api/enter", link);
    app.token = data.token;
    render(data.state);
  } catch (e) {
    if (e.status === 403 || e.status === 409) {  // refused (a repeat, not on the list, a preview): say so politely
      $("refused-text").textContent = e.message;
      showStage("refused");
      return;
    }
    throw e;
  }
}

// ----------------------------------------------------------------------------------- negotiation

function keepSplit() {
  return app.game.items.map((_, i) => Number($(`keep-${i}`).value));
}

function updateOfferPoints() {
  if (!app.game) return;
  const keep = keepSplit();
  let points = 0;
  app.game.items.forEach((item, i) => {
    points += keep[i] * item.your_value;
    $(`give-${i}`).textContent = String(item.count - keep[i]);
  });
  $("offer-points").textContent = String(points);
}

function buildItems(game) {
  const body = $("items-body");
  body.replaceChildren();
  game.items.forEach((item, i) => {
    const row = el("tr");
    row.append(el("td", null, ITEM_LABELS[item.name] || item.name), el("td", null, item.count),
               el("td", null, item.your_value));
    const cell = el("td");
    const select = el("select");
    select.id = `keep-${i}`;
    select.setAttribute("aria-label", `${item.name}s you keep`);
    for (let k = 0; k <= item.count; k++) {
      const option = el("option", null, k);
      option.value = String(k);
      select.append(option);
    }
    select.value = String(item.your_value > 0 ? item.count : 0);
    select.addEventListener("change", updateOfferPoints);
    cell.append(select);
    const give = el("td", null, "0");
    give.id = `give-${i}`;
    row.append(cell, give);
    body.append(row);
  });
}

function outcomeText(game) {
  const o = game.outcome;
  if (!o) return "";
  if (o.result === "deal") return `Deal! You get ${describe(o.you_get, game.items)}: ${o.your_points} points.`;
  if (o.result === "walk_away") return `No deal: ${o.ended_by === "you" ? "you" : "your partner"} walked away. You get 0 points.`;
  if (o.result === "turn_limit") return "No deal: the turns ran out. You get 0 points.";
  if (o.result === "timeout") return "No deal: the time ran out. You get 0 points.";
  if (o.result === "mismatch") return `No deal: your choices did not fit together (your partner chose to keep ` +
    `${describe(o.partner_selection.keep, game.items)}). You get 0 points.`;
  if (o.result === "no_agreement") {
    const you = game.your_selection && game.your_selection.keep === null;
    return `No deal: ${you ? "you" : "your partner"} chose no agreement. You get 0 points.`;
  }
  return "The negotiation ended without a deal.";
}

function renderGame(game) {
  const fresh = !app.game || app.game.game_id !== game.game_id;
  app.game = game;
  if (fresh) buildItems(game);
  updateOfferPoints();
  const text = game.protocol === "text";
  if (text) {
    $("turn-counter").textContent = game.status !== "active" ? `${game.messages_sent} of ${game.max_messages} messages used`
      : game.phase === "talk" ? `Message ${game.messages_sent + 1} of ${game.max_messages}`
      : "The chat is over: choose what you keep";
  } else {
    $("turn-counter").textContent = game.status === "active"
      ? `Turn ${game.turn + 1} of ${game.max_turns}` : `${game.turn} of ${game.max_turns} turns used`;
  }

  const list = $("transcript");
  list.replaceChildren();
  for (const entry of game.transcript) {
    const li = el("li", entry.speaker);
    const said = entry.kind === "end_talk" ? "(ended the chat)" : entry.text;
    li.append(el("span", "who", entry.speaker === "you" ? "You:" : "Partner:"), el("span", "said", said));
    if (entry.message) li.append(el("span", "note", `“${entry.message}”`));
    list.append(li);
  }
  list.scrollTop = list.scrollHeight;

  const offer = $("partner-offer");
  if (game.partner_offer && game.status === "active") {
    offer.textContent = `Your partner offers you ${describe(game.partner_offer.you_get, game.items)} ` +
      `(${game.partner_offer.your_points} points for you).`;
    offer.hidden = false;
  } else {
    offer.hidden = true;
  }

  const active = game.status === "active";
  const mine = active && game.your_turn && !app.busy;
  $("acts-controls").hidden = text;
  $("text-controls").hidden = !text;
  $("offer-label").textContent = text ? "Your choice is" : "Your offer is";
  if (text) {
    const talking = game.phase === "talk";
    $("chat-form").hidden = !talking;
    $("select-form").hidden = talking || !active;
    for (const id of ["chat-input", "btn-say", "btn-end-talk"]) $(id).disabled = !(mine && talking);
    for (const id of ["btn-select", "btn-no-agreement"]) $(id).disabled = !(mine && !talking);
    $("chat-input").maxLength = game.max_message_chars;
    // The table is a planner while chatting and the selection form after.
    for (let i = 0; i < game.items.length; i++) $(`keep-${i}`).disabled = !active || app.busy;
  } else {
    for (const id of ["btn-propose", "btn-insist", "btn-walk"]) $(id).disabled = !mine;
    $("btn-agree").disabled = !(mine && game.can_agree);
    for (let i = 0; i < game.items.length; i++) $(`keep-${i}`).disabled = !mine;
    $("message").disabled = !mine;
  }
  $("status").textContent = active ? (game.your_turn ? "Your move." : "Your partner is thinking…") : "";
  $("btn-leave").hidden = !(active && app.state && app.state.platform);

  const outcome = $("outcome");
  outcome.hidden = active;
  outcome.textContent = outcomeText(game);
  $("btn-to-survey").hidden = active || game.survey_done;
  startTimer(game);
}

function startTimer(game) {
  clearInterval(app.timer);
  app.timer = null;
  if (game.status !== "active") {
    $("timer").textContent = "";
    return;
  }
  app.deadline = Date.now() + game.seconds_left * 1000;
  const tick = async () => {
    const left = Math.max(0, Math.round((app.deadline - Date.now()) / 1000));
    $("timer").textContent = `Time left: ${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
    $("timer").classList.toggle("low", left <= 30);
    if (left <= 0 && !app.busy) {
      clearInterval(app.timer);
      app.timer = null;
      try { renderGame(await api("GET", `/api/games/${app.game.game_id}`)); } catch (e) { showError(e.message); }
    }
  };
  tick();
  app.timer = setInterval(tick, 1000);
}

async function sendAct(kind) {
  if (!app.game || app.busy) return;
  const body = { kind };
  if (kind === "propose" || kind === "insist") body.split = keepSplit();
  const message = $("message").value.trim();
  if (message) body.message = message;
  await sendMove("act", body, () => { $("message").value = ""; });
}

// A move of the text protocol: say (a chat message), end_talk, or select (what the person keeps; null: no
// agreement).
async function sendText(path, body) {
  await sendMove(path, body, () => { if (path === "say") $("chat-input").value = ""; });
}

// Post a move with the view's turn (a retried request is then recorded once) and show the view after the
// partner's reply.
async function sendMove(path, body, done) {
  if (!app.game || app.busy) return;
  const request = { ...body, turn: app.game.turn, client_ts: Date.now() / 1000 };
  app.busy = true;
  renderGame({ ...app.game, your_turn: false });
  showError("");
  try {
    const view = await api("POST", `/api/games/${app.game.game_id}/${path}`, request);
    done();
    app.busy = false;
    renderGame(view);
  } catch (e) {
    app.busy = false;
    showError(e.message);
    try { renderGame(await api("GET", `/api/games/${app.game.game_id}`)); } catch (_) { /* keep the error shown */ }
  }
}

// --------------------------------------------------------------------------------------- survey

function buildSurvey() {
  for (const fs of document.querySelectorAll("#survey-form fieldset")) {
    const q = fs.dataset.q;
    const labels = ["1 strongly disagree", "2", "3", "4", "5 strongly agree"];
    labels.forEach((text, i) => {
      const label = el("label");
      const input = el("input");
      input.type = "radio";
      input.name = q;
      input.value = String(i + 1);
      input.id = `${q}-${i + 1}`;
      label.append(input, document.createTextNode(` ${text}`));
      fs.append(label);
    });
  }
}

async function submitSurvey(event) {
  event.preventDefault();
  const answers = {};
  const questions = ["fair", "human_like", "negotiate_again"];
  if (app.state.attention_question) questions.push("attention");
  for (const q of questions) {
    const chosen = document.querySelector(`input[name="${q}"]:checked`);
    if (!chosen) { showError("Please answer every question."); return; }
    answers[q] = Number(chosen.value);
  }
  answers.comment = $("survey-comment").value;
  try {
    const data = await api("POST", `/api/games/${app.state.game.game_id}/survey`, answers);
    showError("");
    app.game = null;
    app.completion = data;
    render(data.state);
  } catch (e) { showError(e.message); }
}

// ----------------------------------------------------------------------------------------- wiring

async function step(path) {
  try { showError(""); render(await api("POST", path, {})); } catch (e) { showError(e.message); }
}

function wire() {
  $("consent-box").addEventListener("change", () => { $("btn-consent").disabled = !$("consent-box").checked; });
  $("btn-consent").addEventListener("click", () => step("/api/consent"));
  $("btn-instructions").addEventListener("click", async () => {
    await step("/api/instructions");
    if (app.state && app.state.stage === "ready" && !app.state.completed) await step("/api/games");
  });
  $("btn-start").addEventListener("click", () => step("/api/games"));
  $("btn-again").addEventListener("click", () => step("/api/games"));
  $("btn-propose").addEventListener("click", () => sendAct("propose"));
  $("btn-insist").addEventListener("click", () => sendAct("insist"));
  $("btn-agree").addEventListener("click", () => sendAct("agree"));
  $("chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("chat-input").value.trim();
    if (!text) { showError("Type a message first."); return; }
    sendText("say", { text });
  });
  $("btn-end-talk").addEventListener("click", () => sendText("end_talk", {}));
  $("btn-select").addEventListener("click", () => sendText("select", { split: keepSplit() }));
  $("btn-no-agreement").addEventListener("click", () => sendText("select", { split: null }));
  $("btn-walk").addEventListener("click", () => {
    if (!app.walkArmed) {
      app.walkArmed = true;
      $("btn-walk").textContent = "Click again to walk away";
      setTimeout(() => { app.walkArmed = false; $("btn-walk").textContent = "Walk away"; }, 4000);
      return;
    }
    app.walkArmed = false;
    $("btn-walk").textContent = "Walk away";
    sendAct("walk_away");
  });
  $("btn-to-survey").addEventListener("click", async () => {
    try { app.game = null; render(await api("GET", "/api/state")); } catch (e) { showError(e.message); }
  });
  $("survey-form").addEventListener("submit", submitSurvey);
  $("comprehension-form").addEventListener("submit", submitComprehension);
  $("btn-leave").addEventListener("click", leaveStudy);
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const url = new URL(window.location.href);
    url.searchParams.set("pid", $("login-pid").value.trim());
    if (!url.searchParams.get("study")) url.searchParams.set("study", app.defaultStudy || "default");
    window.location.assign(url.toString());
  });
}

async function main() {
  wire();
  buildSurvey();
  const link = params();
  if (!link.pid) {
    try { app.defaultStudy = (await api("GET", "/healthz")).study; } catch (_) { app.defaultStudy = "default"; }
    showStage("login");
    return;
  }
  if (!link.study) {  // a platform's link names the study by its own ids only
    try { link.study = (await api("GET", "/healthz")).study; } catch (e) { showError(e.message); return; }
  }
  try { await enter(link); } catch (e) { showError(e.message); }
}

document.addEventListener("DOMContentLoaded", main);
