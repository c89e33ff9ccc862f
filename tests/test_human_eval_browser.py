"""A whole study session driven in headless Chromium through the real pages, checked in the database.

Needs Debian's chromium at /usr/bin/chromium (``.ci/run`` installs it) and Playwright's Python package.
Screenshots go to the test's temporary folder, and also to ``$PARLEY_SCREENSHOT_DIR`` when it is set.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest
from _human_eval_support import ADMIN, SECRET, kill, start_server

from parley.human_eval.db import make_engine
from parley.human_eval.report import load_tables
from parley.human_eval.security import TokenSigner

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]

pytestmark = pytest.mark.browser


def _save(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    target = os.environ.get("PARLEY_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / name)
    return path


@contextlib.contextmanager
def served_page(tmp_path: Path, config: Path, *, extra: tuple[str, ...] = (), outside=None):
    """``parley serve`` on ``config`` and a headless Chromium page that may contact only that server.

    Yields ``(context, base_url, db_url)``: open pages with ``context.new_page()``. ``outside(route)`` answers requests to other addresses (default:
    refused), so a test can stand in for a platform's end page.
    """
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing; install Debian's chromium package (see .ci/run)")
    sync_api = pytest.importorskip("playwright.sync_api")
    db = f"sqlite:///{tmp_path / 'study.db'}"
    proc, port = start_server(config, db, tmp_path / "server.log", extra=extra)
    base = f"http://127.0.0.1:{port}"
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            context = browser.new_context(viewport={"width": 1100, "height": 900}, accept_downloads=True)

            def route(r):
                if r.request.url.startswith(f"{base}/"):
                    r.continue_()
                elif outside is not None:
                    outside(r)
                else:
                    r.abort()

            context.route("**/*", route)
            try:
                yield context, base, db
            finally:
                browser.close()
    finally:
        kill(proc)


def test_a_whole_session_in_headless_chromium(tmp_path):
    config = tmp_path / "agents.yaml"
    config.write_text("study: browser\nagents: [{name: boulware, partner: boulware}]\n"
                      "contexts: {count: 3, seed: 11}\nthink_time_s: 0.3\n")
    message = "<b>bold</b> & <img src=x onerror=alert(1)>"
    with served_page(tmp_path, config) as (context, base, db):
        page = context.new_page()
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        sig = TokenSigner(SECRET).sign_link("browser", "chromium-1")
        page.goto(f"{base}/?study=browser&pid=chromium-1&sig={sig}")

        page.wait_for_selector("#stage-consent:not([hidden])")
        assert page.is_disabled("#btn-consent")
        page.check("#consent-box")
        page.click("#btn-consent")
        page.wait_for_selector("#stage-instructions:not([hidden])")
        page.click("#btn-instructions")
        page.wait_for_selector("#stage-negotiation:not([hidden])")
        page.wait_for_selector("#btn-propose:not([disabled])")
        rows = page.locator("#items-body tr")
        assert rows.count() == 3
        counts = [int(rows.nth(i).locator("td").nth(1).inner_text()) for i in range(3)]
        values = [int(rows.nth(i).locator("td").nth(2).inner_text()) for i in range(3)]

        # Propose keeping everything, with a message full of markup.
        for i, c in enumerate(counts):
            page.select_option(f"#keep-{i}", str(c))
        assert page.inner_text("#offer-points") == str(sum(c * v for c, v in zip(counts, values, strict=True)))
        page.fill("#message", message)
        partner_before = page.locator("#transcript li.partner").count()
        page.click("#btn-propose")
        page.locator("#transcript li.partner").nth(partner_before).wait_for()
        page.wait_for_selector("#btn-agree:not([disabled])")
        assert "Your partner offers you" in page.inner_text("#partner-offer")
        mine = page.locator("#transcript li.you").last
        assert message in mine.inner_text()  # shown as text...
        assert page.locator("#transcript b, #transcript img").count() == 0  # ...never as markup
        assert page.inner_text("#turn-counter").startswith("Turn ")
        assert page.inner_text("#timer").startswith("Time left: ")
        _save(page, tmp_path, "negotiation.png")

        page.click("#btn-agree")
        page.wait_for_selector("#outcome:not([hidden])")
        outcome_text = page.inner_text("#outcome")
        assert outcome_text.startswith("Deal!")
        _save(page, tmp_path, "deal.png")
        page.click("#btn-to-survey")
        page.wait_for_selector("#stage-survey:not([hidden])")
        page.check("#fair-4")
        page.check("#human_like-2")
        page.check("#negotiate_again-5")
        page.fill("#survey-comment", "quick and clear")
        page.click("#btn-survey")
        page.wait_for_selector("#stage-done:not([hidden])")
        code = page.inner_text("#completion-code").strip()
        assert len(code) == 14
        _save(page, tmp_path, "done.png")
        assert dialogs == []  # no script from the message ever ran

        # The admin page: status, results and plots, fetched with the admin token.
        admin = context.new_page()
        admin.goto(f"{base}/admin")
        admin.fill("#admin-token", "wrong-token")
        admin.click("#token-form button")
        admin.wait_for_selector("#error:not([hidden])")
        assert "admin token" in admin.inner_text("#error")
        admin.fill("#admin-token", ADMIN)
        admin.click("#token-form button")
        admin.wait_for_selector("#status-section:not([hidden])")
        assert "1 negotiations" in admin.inner_text("#totals")
        assert "boulware" in admin.inner_text("#results-table")
        admin.wait_for_function("() => [...document.querySelectorAll('#plots img')].every(i => i.complete "
                                "&& i.naturalWidth > 0) && document.querySelectorAll('#plots img').length === 3")
        _save(admin, tmp_path, "admin.png")

    tables = load_tables(make_engine(db), "browser")
    (game,) = tables["games"]
    assert game["outcome"] == "deal" and game["completion_code"] == code and game["pid"] == "chromium-1"
    assert game["human_score"] == sum(v * k for v, k in zip(values, game["human_gets"], strict=True))
    assert f"{game['human_score']:g} points" in outcome_text
    assert (game["fair"], game["human_like"], game["negotiate_again"]) == (4, 2, 5)
    human_acts = [e for e in tables["events"] if e["kind"] == "act" and e["actor"] == "human"]
    assert human_acts[0]["message"] == message and human_acts[-1]["action"] == 250  # agree
    assert human_acts[0]["client_ts"] is not None


PROLIFIC_PID, PROLIFIC_STUDY = "5f1a2b3c4d5e6f7a8b9c0d1e", "65f0c0ffee0123456789abcd"


def test_a_prolific_participant_from_link_to_redirect_and_bonus_in_headless_chromium(tmp_path):
    """Posted on Prolific as it is, on a server hosting two studies: the signed link with Prolific's
    parameters, the comprehension check (one wrong try), play, the survey with its attention check, the
    redirect with the completion code; then the admin's screens: bonuses, links and a replay."""
    from parley.human_eval.service import ATTENTION_ANSWER, COMPREHENSION_QUESTIONS

    config = tmp_path / "prolific.yaml"
    config.write_text(
        "study: prol\nagents: [{name: conceder, partner: conceder}]\ncontexts: {count: 3, seed: 5}\n"
        f"think_time_s: 0.2\nplatform: {{name: prolific, study_id: {PROLIFIC_STUDY}, completion_code: C1DONE}}\n"
        "bonus: {per_point: 0.1, max: 2.0, currency: GBP}\ncomprehension_attempts: 2\nattention_check: true\n")
    other = tmp_path / "other.yaml"
    other.write_text("study: other\nagents: [{name: boulware, partner: boulware}]\n")
    redirects = []

    def prolific_end_page(r):  # Prolific's end page, stood in for here
        if r.request.url.startswith("https://app.prolific.com/"):
            redirects.append(r.request.url)
            r.fulfill(status=200, content_type="text/html", body="<p>Submission complete</p>")
        else:
            r.abort()

    with served_page(tmp_path, config, extra=("--agents", str(other)), outside=prolific_end_page) as (
            context, base, db):
        page = context.new_page()
        sig = TokenSigner(SECRET).sign_link("prol", PROLIFIC_PID)
        page.goto(f"{base}/?study=prol&PROLIFIC_PID={PROLIFIC_PID}&STUDY_ID={PROLIFIC_STUDY}"
                  f"&SESSION_ID=sess42&sig={sig}")
        page.wait_for_selector("#stage-consent:not([hidden])")
        assert page.url.startswith(f"{base}/studies/prol/?")  # the server sent the link to its study
        page.check("#consent-box")
        page.click("#btn-consent")
        page.wait_for_selector("#stage-instructions:not([hidden])")
        page.click("#btn-instructions")
        page.wait_for_selector("#stage-comprehension:not([hidden])")
        first = COMPREHENSION_QUESTIONS[0]
        for q in COMPREHENSION_QUESTIONS:  # the first answer wrong: told so, one try left
            wrong = (q["answer"] + 1) % len(q["options"])
            page.check(f"#cq-{q['id']}-{wrong if q is first else q['answer']}")
        page.click("#btn-comprehension")
        page.wait_for_selector("#comprehension-feedback:has-text('Not quite')")
        page.check(f"#cq-{first['id']}-{first['answer']}")
        page.click("#btn-comprehension")
        page.wait_for_selector("#stage-negotiation:not([hidden])")

        # Play: ask for everything until the partner offers something, then agree.
        rows = page.locator("#items-body tr")
        counts = [int(rows.nth(i).locator("td").nth(1).inner_text()) for i in range(3)]
        for _ in range(10):
            page.wait_for_selector("#btn-propose:not([disabled]), #outcome:not([hidden])")
            if page.is_visible("#outcome"):
                break
            if page.is_enabled("#btn-agree"):
                page.click("#btn-agree")
                break
            for i, c in enumerate(counts):
                page.select_option(f"#keep-{i}", str(c))
            partners = page.locator("#transcript li.partner").count()
            page.click("#btn-propose")
            page.wait_for_function(f"() => document.querySelectorAll('#transcript li.partner').length > {partners}"
                                   " || !document.querySelector('#outcome').hidden")
        page.wait_for_selector("#outcome:not([hidden])")
        page.click("#btn-to-survey")
        page.wait_for_selector("#stage-survey:not([hidden])")
        assert page.is_visible("#attention-item")
        page.check("#fair-3")
        page.check("#human_like-3")
        page.check("#negotiate_again-3")
        page.check(f"#attention-{ATTENTION_ANSWER}")
        page.click("#btn-survey")
        page.wait_for_selector("#stage-done:not([hidden])")
        assert page.inner_text("#completion-code").strip() == "C1DONE"
        page.wait_for_url("https://app.prolific.com/**", timeout=15_000)
        assert redirects == ["https://app.prolific.com/submissions/complete?cc=C1DONE"]

        # The admin page of that study: the bonus file holds the participant.
        admin = context.new_page()
        admin.goto(f"{base}/studies/prol/admin")
        admin.fill("#admin-token", ADMIN)
        admin.click("#token-form button")
        admin.wait_for_selector("#status-section:not([hidden])")
        assert "1 participants earned bonuses" in admin.inner_text("#bonus-totals")
        with admin.expect_download() as download:
            admin.click("#btn-bonuses")
        bonus_lines = Path(download.value.path()).read_text().splitlines()
        # Recruitment links for new ids, made on the admin screen, point at this study.
        admin.fill("#links-pids", "60aabbccddeeff0011223344")
        admin.click("#links-form button[type=submit]")
        admin.wait_for_selector("#links-table td")
        link = admin.locator("#links-table td").nth(1).inner_text()
        assert link.startswith(f"{base}/studies/prol/?study=prol&pid=60aabbccddeeff0011223344&sig=")
        # The game, replayed turn by turn.
        admin.click("#games-table button")
        admin.wait_for_selector("#replay:not([hidden])")
        assert admin.locator("#replay-table tr").count() == 2  # header + the start
        admin.click("#btn-last")
        assert admin.inner_text("#replay-state").startswith("After turn") and "deal" in admin.inner_text("#replay-state")
        _save(admin, tmp_path, "admin-replay.png")

    tables = load_tables(make_engine(db), "prol")
    (game,) = tables["games"]
    (person,) = tables["participants"]
    assert (person["pid"], person["platform_session_id"], person["comprehension_tries"]) == (PROLIFIC_PID, "sess42", 2)
    assert game["outcome"] == "deal" and game["attention_passed"] is True
    amount = round(min(2.0, 0.1 * game["human_score"]), 2)
    assert bonus_lines == [f"{PROLIFIC_PID},{amount:.2f}"]


def test_a_text_protocol_game_in_headless_chromium(tmp_path):
    config = tmp_path / "agents.yaml"
    config.write_text("study: chat\nagents: [{name: conceder, partner: conceder}]\nprotocol: text\n"
                      "contexts: {count: 2, seed: 5}\nthink_time_s: 0.3\n")
    with served_page(tmp_path, config) as (context, base, db):
        page = context.new_page()
        sig = TokenSigner(SECRET).sign_link("chat", "chromium-text")
        page.goto(f"{base}/?study=chat&pid=chromium-text&sig={sig}")
        page.wait_for_selector("#stage-consent:not([hidden])")
        page.check("#consent-box")
        page.click("#btn-consent")
        page.wait_for_selector("#stage-instructions:not([hidden])")
        assert page.is_visible("#rules-text") and not page.is_visible("#rules-acts")
        page.click("#btn-instructions")
        page.wait_for_selector("#stage-negotiation:not([hidden])")
        page.wait_for_selector("#btn-say:not([disabled])")
        # The chat box and selection form stand in for the offer buttons.
        assert not page.is_visible("#btn-propose") and not page.is_visible("#select-form")

        # Offer the partner everything (the conceder agrees), end the chat, and choose nothing.
        partner_before = page.locator("#transcript li.partner").count()
        page.fill("#chat-input", "You can have everything.")
        page.click("#btn-say")
        page.locator("#transcript li.partner").nth(partner_before).wait_for()
        assert "You can have everything." in page.inner_text("#transcript li.you")
        page.wait_for_selector("#btn-end-talk:not([disabled])")
        page.click("#btn-end-talk")
        page.wait_for_selector("#btn-select:not([disabled])")
        assert not page.is_visible("#chat-form")
        for i in range(3):
            page.select_option(f"#keep-{i}", "0")
        page.click("#btn-select")
        page.wait_for_selector("#outcome:not([hidden])")
        assert page.inner_text("#outcome").startswith("Deal!")
        _save(page, tmp_path, "text-protocol.png")
    engine = make_engine(db)
    try:
        games = load_tables(engine, "chat")["games"]
    finally:
        engine.dispose()
    assert [(g["outcome"], g["human_score"], g["agent_score"]) for g in games] == [("deal", 0.0, 10.0)]
