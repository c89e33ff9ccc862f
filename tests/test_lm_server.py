"""``parley lm serve``: the OpenAI-compatible endpoint, tested over real loopback HTTP."""

from __future__ import annotations

import httpx
import pytest

pytest.importorskip("fastapi")

from parley.agents.lm.server import create_app  # noqa: E402
from parley.envs.corpus import parse_utterance  # noqa: E402
from parley.envs.negotiation_text_v0 import parse_selection  # noqa: E402
from parley.text import make_text_player  # noqa: E402

SYSTEM = {"role": "system", "content": "You negotiate. <input> 1 4 4 1 1 2 </input>"}


@pytest.fixture(scope="module", params=["boulware", "lm"])
def server(request, tiny_language_model, serve_app):
    spec = "boulware" if request.param == "boulware" else tiny_language_model
    player = make_text_player(spec, seed=0)
    app = create_app(player, request.param, max_utterance_chars=100, max_messages=6)
    with serve_app(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        yield request.param, client


def chat(client, name, messages, **extra):
    return client.post("/v1/chat/completions", json={"model": name, "messages": messages, **extra})


def test_models_lists_the_served_player(server):
    name, client = server
    body = client.get("/v1/models").json()
    assert body["object"] == "list" and body["data"][0]["id"] == name


def test_a_turn_is_answered_in_the_openai_format(server):
    name, client = server
    response = chat(client, name, [SYSTEM, {"role": "user", "content": "I'd like the book, you take the rest."}])
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == name
    reply = body["choices"][0]["message"]
    assert reply["role"] == "assistant" and isinstance(reply["content"], str) and reply["content"]
    if name == "boulware":  # the realiser's sentences parse back to acts
        assert parse_utterance(reply["content"], (1, 4, 1)) is not None


def test_after_selection_the_reply_is_a_selection_that_fits(server):
    name, client = server
    messages = [SYSTEM, {"role": "assistant", "content": "I need the book and the ball; you take the rest."},
                {"role": "user", "content": "deal"}, {"role": "user", "content": "<selection>"},
                {"role": "user", "content": "book=0 hat=4 ball=0"}]
    response = chat(client, name, messages)
    assert response.status_code == 200
    selection = response.json()["choices"][0]["message"]["content"]
    picked = parse_selection(selection, (1, 4, 1))
    if name == "boulware":
        assert picked == (1, 0, 1)


@pytest.mark.parametrize("messages,extra,status,needle", [
    ([SYSTEM, {"role": "user", "content": "x" * 101}], {}, 400, "at most 100 characters"),
    ([SYSTEM, {"role": "user", "content": "<selection>"}, {"role": "user", "content": "book=2 hat=0 ball=0"}],
     {}, 400, "does not fit the items"),
    ([{"role": "user", "content": "hi"}], {}, 400, "<input>"),
    ([{"role": "system", "content": "<input> 1 4 4 1 1 9 </input>"}, {"role": "user", "content": "hi"}], {}, 400,
     "worth 10"),
    ([SYSTEM, {"role": "robot", "content": "hi"}], {}, 400, "role"),
    ([SYSTEM] + [{"role": "user", "content": "hi"}] * 7, {}, 400, "at most 6 utterances"),
    ([SYSTEM, {"role": "user", "content": "<selection>"}, {"role": "assistant", "content": "book=1 hat=0 ball=0"}],
     {}, 400, "already made its selection"),
    ([SYSTEM, {"role": "user", "content": "hi"}], {"stream": True}, 400, "stream"),
    ([SYSTEM, {"role": "user", "content": "hi"}], {"model": "someone-else"}, 404, "unknown model"),
    ("not a list", {}, 400, "messages"),
])
def test_bad_input_gets_a_4xx_in_the_openai_error_format(server, messages, extra, status, needle):
    name, client = server
    response = client.post("/v1/chat/completions", json={"model": name, "messages": messages, **extra})
    assert response.status_code == status
    error = response.json()["error"]
    assert needle in error["message"] and error["type"].endswith("_error")


def test_a_body_that_is_not_json_gets_a_400(server):
    _, client = server
    response = client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and "JSON" in response.json()["error"]["message"]
    assert client.get("/v1/nothing-here").status_code == 404
