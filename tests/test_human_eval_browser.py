"""A whole study session driven in headless Chromium through the real pages, checked in the database.

Needs Debian's chromium at /usr/bin/chromium (``.ci/run`` installs it) and Playwright's Python package.
Screenshots go to the test's temporary folder, and also to ``$PARLEY_SCREENSHOT_DIR`` when it is set.
"""

from __future__ import annotations

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


def test_a_whole_session_in_headless_chromium(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing; install Debian's chromium package (see .ci/run)")
    sync_api = pytest.importorskip("playwright.sync_api")
    config = tmp_path / "agents.yaml"
    config.write_text("study: browser\nagents: [{name: boulware, partner: boulware}]\n"
                      "contexts: {count: 3, seed: 11}\nthink_time_s: 0.3\n")
    db = f"sqlite:///{tmp_path / 'study.db'}"
    proc, port = start_server(config, db, tmp_path / "server.log")
    message = "<b>bold</b> & <img src=x onerror=alert(1)>"
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            # Only the study server on loopback may be contacted.
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(
                f"http://127.0.0.1:{port}/") else route.abort())
            dialogs = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            sig = TokenSigner(SECRET).sign_link("browser", "chromium-1")
            page.goto(f"http://127.0.0.1:{port}/?study=browser&pid=chromium-1&sig={sig}")

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
            admin = browser.new_page(viewport={"width": 1100, "height": 900})
            admin.goto(f"http://127.0.0.1:{port}/admin")
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
            browser.close()
    finally:
        kill(proc)

    tables = load_tables(make_engine(db), "browser")
    (game,) = tables["games"]
    assert game["outcome"] == "deal" and game["completion_code"] == code and game["pid"] == "chromium-1"
    assert game["human_score"] == sum(v * k for v, k in zip(values, game["human_gets"], strict=True))
    assert f"{game['human_score']:g} points" in outcome_text
    assert (game["fair"], game["human_like"], game["negotiate_again"]) == (4, 2, 5)
    human_acts = [e for e in tables["events"] if e["kind"] == "act" and e["actor"] == "human"]
    assert human_acts[0]["message"] == message and human_acts[-1]["action"] == 250  # agree
    assert human_acts[0]["client_ts"] is not None
