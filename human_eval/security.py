"""Signed participant tokens and per-key rate limits.

A participant token is ``<payload>.<signature>``: the payload is base64url JSON naming the participant
row and study; the signature is HMAC-SHA256 under the server secret. Tokens travel in the
``X-Session-Token`` header, never in cookies, so a third-party page cannot make a browser send one
(no CSRF), and a changed payload or a token signed with another secret is rejected.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from pathlib import Path


class TokenError(ValueError):
    """A token that is malformed, forged or expired."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Issues and checks participant tokens. ``max_age_s`` bounds how long a token stays valid."""

    def __init__(self, secret: str | bytes, *, max_age_s: float = 7 * 24 * 3600) -> None:
        if isinstance(secret, str):
            secret = secret.encode()
        if len(secret) < 16:
            raise ValueError("the token secret must be at least 16 bytes")
        self._secret = secret
        self.max_age_s = max_age_s

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())

    def issue(self, participant_id: int, study: str) -> str:
        body = json.dumps({"p": participant_id, "s": study, "t": int(time.time()), "n": secrets.token_hex(4)},
                          separators=(",", ":"))
        payload = _b64(body.encode())
        return f"{payload}.{self._sign(payload)}"

    def verify(self, token: str | None) -> tuple[int, str]:
        """``(participant_id, study)`` of a valid token; :class:`TokenError` otherwise."""
        # Header values arrive as latin-1 text: a non-ASCII character can never be part of a valid token,
        # and hmac.compare_digest refuses to compare non-ASCII str.
        if not token or len(token) > 512 or token.count(".") != 1 or not token.isascii():
            raise TokenError("missing or malformed session token")
        payload, signature = token.split(".")
        if not hmac.compare_digest(self._sign(payload).encode(), signature.encode()):
            raise TokenError("invalid session token signature")
        try:
            body = json.loads(_unb64(payload))
            participant_id, study, issued = int(body["p"]), str(body["s"]), float(body["t"])
        except (ValueError, KeyError, TypeError):
            raise TokenError("malformed session token payload") from None
        if time.time() - issued > self.max_age_s:
            raise TokenError("session token expired; open the study link again")
        return participant_id, study


    def sign_link(self, study: str, pid: str) -> str:
        """The ``sig`` of a recruitment link: proof that the link was issued for this study and pid."""
        # The NUL separators keep (study, pid) pairs apart, and token payloads (base64) never contain NUL.
        mac = hmac.new(self._secret, f"link\x00{study}\x00{pid}".encode(), hashlib.sha256).digest()
        return _b64(mac[:18])

    def check_link(self, study: str, pid: str, signature: str | None) -> bool:
        """Whether ``signature`` is the :meth:`sign_link` of ``(study, pid)``."""
        if not signature or not signature.isascii() or len(signature) > 64:
            return False
        return hmac.compare_digest(self.sign_link(study, pid).encode(), signature.encode())


class RateLimiter:
    """Token buckets keyed by participant (or client address): ``rate`` per second, ``burst`` at most."""

    def __init__(self, rate: float, burst: int, *, max_keys: int = 100_000) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: dict[object, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: object) -> bool:
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                return False
            if len(self._buckets) >= self.max_keys and key not in self._buckets:
                # Forget full buckets first: they carry no information.
                full = [k for k, (t, _) in self._buckets.items() if t >= self.burst]
                for k in full[: max(1, len(full))]:
                    del self._buckets[k]
            self._buckets[key] = (tokens - 1.0, now)
            return True


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def new_completion_code() -> str:
    """A completion code people can type: 12 characters without look-alikes, in groups of four."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    raw = "".join(secrets.choice(alphabet) for _ in range(12))
    return f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"


class Allowlist:
    """Participant ids allowed into a study, one a line in a text file (``#`` starts a comment).

    The file is read again when it changes, so ids can be added while the study runs (e.g. from the
    platform's list of people who accepted the task).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self._ids: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def __contains__(self, pid: object) -> bool:
        with self._lock:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp != self._stamp:
                lines = self.path.read_text(encoding="utf-8").splitlines()
                self._ids = frozenset(x for x in (line.split("#", 1)[0].strip() for line in lines) if x)
                self._stamp = stamp
            return pid in self._ids
