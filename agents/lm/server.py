"""``parley lm serve``: a text player behind an OpenAI-compatible chat-completions endpoint on loopback.

Endpoints: ``POST /v1/chat/completions`` and ``GET /v1/models``. One request is one turn of the served
player in a game of :mod:`parley.envs.negotiation_text_v0`; the server keeps no state between requests.

How a chat request carries the game
-----------------------------------
* The **system** message holds the served player's context as the corpus writes it:
  ``<input> 1 4 4 1 1 2 </input>`` -- count and value of book, hat and ball (its own values; the
  partner's stay private). Other text around that tag is ignored.
* **user** messages are the partner's utterances, **assistant** messages the served player's earlier
  ones, in order. Either side's message ``<selection>`` ends the talk.
* After a ``<selection>`` the served player's next reply is its own selection (``book=1 hat=0 ball=2``
  or ``<no_agreement>``). A user message after ``<selection>`` is the partner's selection: it is checked
  (it must fit the counts) and not shown to the player, since selections are secret.

Bad input -- unreadable JSON, a request without the ``<input>`` context or with invalid counts/values,
an utterance over ``max_utterance_chars``, more than ``max_messages`` utterances, a selection that does
not fit the counts, a request for a turn after the served player has selected -- gets a 4xx answer in
the OpenAI error format ``{"error": {"message", "type": "invalid_request_error", "param", "code"}}``.
``stream=true`` and ``n > 1`` are refused the same way.

FastAPI and uvicorn (the ``web`` extra) are imported when the app is built, not with this module (so the
handlers' annotations are real objects: this module does not postpone annotations).
"""


import json
import re
import threading
import time
import uuid
from typing import Any

from parley.envs.negotiation import valid_value_pairs
from parley.envs.negotiation_text_v0 import (
    DEFAULT_MAX_MESSAGES,
    DEFAULT_MAX_UTTERANCE_CHARS,
    SELECTION_TOKEN,
    TextInputError,
    format_observation,
    normalise_utterance,
    parse_selection,
)
from parley.envs.realiser import TextPolicy

MAX_BODY_BYTES = 1_000_000
_INPUT = re.compile(r"<input>([^<]*)</input>")


class ChatRequestError(Exception):
    """A request the server refuses: HTTP ``status`` and an OpenAI-style error body."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.param, self.code = status, param, code

    def body(self) -> dict[str, Any]:
        kind = "invalid_request_error" if self.status != 404 else "not_found_error"
        return {"error": {"message": str(self), "type": kind, "param": self.param, "code": self.code}}


def _text_of(message: Any, index: int) -> tuple[str, str]:
    if not isinstance(message, dict):
        raise ChatRequestError(f"messages[{index}] must be an object with 'role' and 'content'", param="messages")
    role, content = message.get("role"), message.get("content")
    if role not in ("system", "developer", "user", "assistant"):
        raise ChatRequestError(f"messages[{index}].role must be system, user or assistant, got {role!r}",
                               param="messages")
    if isinstance(content, list):  # content parts: only text parts carry anything here
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if len(parts) != len(content) or not all(isinstance(p, str) for p in parts):
            raise ChatRequestError(f"messages[{index}].content parts must all be text parts", param="messages")
        content = "".join(parts)
    if not isinstance(content, str):
        raise ChatRequestError(f"messages[{index}].content must be a string", param="messages")
    return role, content


def observation_from_chat(messages: Any, *, max_messages: int = DEFAULT_MAX_MESSAGES,
                          max_utterance_chars: int = DEFAULT_MAX_UTTERANCE_CHARS) -> str:
    """The served player's text observation for a chat request's ``messages`` (see the module docstring)."""
    if not isinstance(messages, list) or not messages:
        raise ChatRequestError("messages must be a non-empty list", param="messages")
    roles = [_text_of(m, i) for i, m in enumerate(messages)]
    system = " ".join(content for role, content in roles if role in ("system", "developer"))
    match = _INPUT.search(system)
    if match is None:
        raise ChatRequestError("the system message must hold the game context as '<input> count value count value "
                               "count value </input>' (book, hat, ball; the served player's own values), "
                               "e.g. '<input> 1 4 4 1 1 2 </input>'", param="messages")
    try:
        numbers = [int(t) for t in match.group(1).split()]
    except ValueError:
        numbers = []
    counts, values = tuple(numbers[0::2]), tuple(numbers[1::2])
    if len(numbers) != 6 or not any(a == values for a, _ in valid_value_pairs(counts) if len(counts) == 3):
        raise ChatRequestError(f"invalid <input> {match.group(1).strip()!r}: 6 integers, count and value for book, hat "
                               "and ball; 1-4 of each item, 5-7 in all, the items worth 10 in total",
                               param="messages")
    dialogue: list[tuple[int, str]] = []
    selecting, selected = False, False
    for index, (role, content) in enumerate(roles):
        if role in ("system", "developer"):
            continue
        speaker = 0 if role == "assistant" else 1
        try:
            if selecting:  # after <selection>: selections, checked and kept secret
                parse_selection(content, counts)
                selected = selected or speaker == 0
                continue
            if content.strip() == SELECTION_TOKEN:
                dialogue.append((speaker, SELECTION_TOKEN))
                selecting = True
                continue
            dialogue.append((speaker, normalise_utterance(content, max_utterance_chars)))
        except TextInputError as err:
            raise ChatRequestError(f"messages[{index}]: {err}", param="messages") from None
        if len(dialogue) > max_messages:
            raise ChatRequestError(f"a game holds at most {max_messages} utterances before the selections",
                                   param="messages")
    if selected:
        raise ChatRequestError("the served player has already made its selection: the game is over",
                               param="messages")
    if len(dialogue) == max_messages and not selecting:
        dialogue.append((1, SELECTION_TOKEN))  # the limit ends the talk, as in the env
    return format_observation(counts, values, dialogue)


def create_app(player: TextPolicy, model_name: str, *, max_messages: int = DEFAULT_MAX_MESSAGES,
               max_utterance_chars: int = DEFAULT_MAX_UTTERANCE_CHARS):
    """A FastAPI app serving ``player`` as model ``model_name`` (see the module docstring)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    app = FastAPI(title=f"parley text player {model_name}", docs_url=None, redoc_url=None, openapi_url=None)
    lock = threading.Lock()  # one reply at a time: players keep a random stream
    created = int(time.time())

    def error(err: ChatRequestError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error(ChatRequestError(str(exc.detail), status=exc.status_code))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(ChatRequestError(f"invalid request: {exc.errors()}"))

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created,
                                            "owned_by": "parley"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        raw = await request.body()
        try:
            if len(raw) > MAX_BODY_BYTES:
                raise ChatRequestError(f"the request body may hold at most {MAX_BODY_BYTES} bytes", status=413)
            try:
                body = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ChatRequestError("the request body must be JSON") from None
            if not isinstance(body, dict):
                raise ChatRequestError("the request body must be a JSON object")
            if body.get("model") not in (None, model_name):
                raise ChatRequestError(f"unknown model {body.get('model')!r}; this server serves {model_name!r}",
                                       status=404, param="model", code="model_not_found")
            if body.get("stream"):
                raise ChatRequestError("stream=true is not supported: ask for the whole reply", param="stream")
            if body.get("n", 1) != 1:
                raise ChatRequestError("n must be 1", param="n")
            observation = observation_from_chat(body.get("messages"), max_messages=max_messages,
                                                max_utterance_chars=max_utterance_chars)
        except ChatRequestError as err:
            return error(err)
        with lock:
            reply = player.reply(observation)
        return JSONResponse({
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(observation.split()), "completion_tokens": len(reply.split()),
                      "total_tokens": len(observation.split()) + len(reply.split())},
        })

    return app


def serve(player: TextPolicy, model_name: str, *, host: str = "127.0.0.1", port: int = 8000, **kwargs: Any) -> None:
    """Run the app with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(player, model_name, **kwargs), host=host, port=port, log_level="warning")
