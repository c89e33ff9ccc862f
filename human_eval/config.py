"""Study configuration: which agents people meet, on which contexts, under which time limits.

A study is described by a YAML file (``agents.yaml``)::

    study: pilot-2026              # the ``study`` parameter of the participant links
    agents:                        # balanced random assignment over these
      - {name: boulware, partner: boulware}          # a scripted partner (parley.agents.partners.scripted)
      - {name: tough, partner: boulware, params: {e: 0.1}}
      - {name: ppo-v3, checkpoint: runs/ppo/final}  # a trained policy (parley.agents.load_policy)
      - {name: gpt, player: "chat:http://127.0.0.1:8000/v1#gpt"}  # any `parley arena` player spec
    contexts: {count: 20, seed: 0}  # generated; or a file path readable by load_contexts
    max_turns: 10
    protocol: acts                 # acts (offers built on the page) or text (chat, then secret selections)
    max_messages: 20               # text protocol: the talk ends after this many messages
    think_time_s: 1.5              # how long the agent "thinks" before its reply is shown
    idle_timeout_s: 210            # no act for this long on the person's turn -> no deal
    session_time_s: 1200           # a whole negotiation may take at most this long
    sessions_per_participant: 1
    pages_dir: pages               # optional: your own index.html (consent, instructions), style.css, ...
    entry: signed                  # signed (default): links carry sig=...; allowlist: ids in a file; open
    allowlist: ids.txt             # with entry: allowlist, the ids allowed in, one a line
    platform:                      # optional: a crowd platform's link parameters, codes and redirect
      name: prolific               # prolific (PROLIFIC_PID, STUDY_ID, SESSION_ID) or mturk (workerId, ...)
      study_id: 65f0c0ffee0123456789abcd   # the STUDY_ID / hitId the links must carry (optional)
      completion_code: C1A2B3C4
      timeout_code: C5TIMEOUT      # optional: for a negotiation that timed out
      returned_code: C6RETURN      # optional: for a participant who leaves the study early
    exclude_studies: [pilot-2025]  # refuse participants who took part in these studies (same database)
    bonus: {per_point: 0.05, max: 0.5, currency: GBP}   # paid per point the participant scores
    comprehension_attempts: 3      # rules questions before play, this many tries (0: no check)
    attention_check: true          # an instructed-response item in the survey

Every field except ``agents`` has a default; :data:`DEFAULT_STUDY` needs no file at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from parley.envs.contexts import load_contexts
from parley.envs.negotiation import Context, sample_context

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
ENTRY_MODES = ("signed", "allowlist", "open")
# How people negotiate: coarse acts built with the offer builder, or the text protocol of
# parley.envs.negotiation_text_v0 (utterances, then a secret selection each).
PROTOCOLS = ("acts", "text")
PLATFORMS = ("prolific", "mturk")
# The ids each platform puts in its links: Prolific ids are 24 hex digits; MTurk ids are upper-case
# letters and digits. Any other study takes pids of letters, digits, '-', '_' and '.'.
PID_PATTERNS = {
    None: re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"),
    "prolific": re.compile(r"[0-9a-f]{24}"),
    "mturk": re.compile(r"A[A-Z0-9]{5,63}"),
}
SESSION_PATTERNS = {"prolific": re.compile(r"[0-9a-zA-Z]{1,64}"), "mturk": re.compile(r"[A-Z0-9]{1,64}")}
_CODE_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


class StudyConfigError(ValueError):
    """A study configuration that cannot be used; the message says which field and why."""


def _check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 64 or not set(value) <= _NAME_CHARS:
        raise StudyConfigError(f"{what} must be 1-64 characters of letters, digits, '-', '_' or '.', got {value!r}")
    return value


@dataclass(frozen=True)
class AgentSpec:
    """One agent of a study: a scripted ``partner`` (with ``params``), a trained ``checkpoint``, or a
    ``player``: any player spec of ``parley arena`` (a scripted name, ``policy:RUN``,
    ``chat:URL#MODEL`` -- a language model behind an OpenAI-compatible endpoint -- and, in a study of
    ``protocol: text``, ``lm:DIR``, a dialogue model written by ``parley train-lm``). Naming the agent as the
    arena names the player lets ``parley arena --study-db`` rate people and that player together."""

    name: str
    partner: str | None = None
    checkpoint: str | None = None
    params: dict = field(default_factory=dict)
    player: str | None = None

    @classmethod
    def from_dict(cls, raw: Any, where: str = "agents") -> AgentSpec:
        if isinstance(raw, str):
            raw = {"name": raw, "partner": raw}
        if not isinstance(raw, dict):
            raise StudyConfigError(f"{where}: each agent is a mapping like {{name: x, partner: boulware}}, got {raw!r}")
        unknown = set(raw) - {"name", "partner", "checkpoint", "params", "player"}
        if unknown:
            raise StudyConfigError(f"{where}: unknown keys {sorted(unknown)}; allowed: name, partner, checkpoint, "
                                   "params, player")
        name = _check_name(raw.get("name"), f"{where}.name")
        partner, checkpoint, player = raw.get("partner"), raw.get("checkpoint"), raw.get("player")
        if sum(x is not None for x in (partner, checkpoint, player)) != 1:
            raise StudyConfigError(f"{where} ({name}): give exactly one of 'partner' (a scripted partner name), "
                                   "'checkpoint' (a path for load_policy) or 'player' (a `parley arena` player spec "
                                   "such as chat:http://127.0.0.1:8000/v1#model)")
        params = raw.get("params") or {}
        if not isinstance(params, dict):
            raise StudyConfigError(f"{where} ({name}): params must be a mapping, got {params!r}")
        if player is not None:
            from parley.agents.arena import ArenaError, parse_player

            if params:
                raise StudyConfigError(f"{where} ({name}): params apply to 'partner' and 'checkpoint' agents only")
            try:
                parse_player(str(player))  # a spec it cannot read raises
            except ArenaError as err:
                raise StudyConfigError(f"{where} ({name}): {err}") from None
        return cls(name=name, partner=None if partner is None else str(partner),
                   checkpoint=None if checkpoint is None else str(checkpoint), params=dict(params),
                   player=None if player is None else str(player))


@dataclass(frozen=True)
class PlatformSpec:
    """A crowd platform: which link parameters carry the ids, and the codes that send people back."""

    name: str
    completion_code: str
    study_id: str | None = None
    timeout_code: str | None = None
    returned_code: str | None = None

    @classmethod
    def from_dict(cls, raw: Any) -> PlatformSpec:
        if not isinstance(raw, dict):
            raise StudyConfigError(f"platform must be a mapping like {{name: prolific, completion_code: C1A2B3C4}}, "
                                   f"got {raw!r}")
        allowed = {f.name for f in fields(cls)}
        unknown = set(raw) - allowed
        if unknown:
            raise StudyConfigError(f"platform: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        if raw.get("name") not in PLATFORMS:
            raise StudyConfigError(f"platform.name must be one of {', '.join(PLATFORMS)}, got {raw.get('name')!r}")
        if raw.get("completion_code") is None:
            raise StudyConfigError("platform.completion_code is required: the code the platform gives you for "
                                   "this study")
        values = {}
        for key in ("completion_code", "timeout_code", "returned_code", "study_id"):
            value = raw.get(key)
            if value is not None:
                value = str(value)
                if not _CODE_PATTERN.fullmatch(value):
                    raise StudyConfigError(f"platform.{key} must be 1-64 letters, digits, '-' or '_', got {value!r}")
            values[key] = value
        return cls(name=raw["name"], **values)

    def completion_url(self, code: str) -> str | None:
        """Where the page sends the participant with ``code``; None where the code is typed in instead."""
        if self.name == "prolific":
            return f"https://app.prolific.com/submissions/complete?cc={code}"
        return None  # MTurk: the participant pastes the code into the HIT


@dataclass(frozen=True)
class StudyConfig:
    """Everything that defines a study. Build with :meth:`from_dict` / :meth:`from_yaml` to validate."""

    study: str = "default"
    agents: tuple[AgentSpec, ...] = (AgentSpec("boulware", partner="boulware"),
                                     AgentSpec("conceder", partner="conceder"))
    contexts: tuple[Context, ...] = ()
    max_turns: int = 10
    # "acts" or "text" (see PROTOCOLS); max_messages is the text protocol's limit on the talk.
    protocol: str = "acts"
    max_messages: int = 20
    think_time_s: float = 1.0
    idle_timeout_s: float = 210.0
    session_time_s: float = 1200.0
    sessions_per_participant: int = 1
    max_message_chars: int = 500
    # Token bucket per participant for state-changing requests: sustained rate and burst.
    rate_per_s: float = 5.0
    rate_burst: int = 20
    seed: int = 0
    # A folder whose files replace the packaged pages and assets of the same name (index.html holds the
    # consent and instruction texts); relative paths are resolved against the config file's folder.
    pages_dir: str | None = None
    # Who may enter: "signed" links (``sig`` made by the admin's link endpoint), ids in ``allowlist``
    # (a file, re-read when it changes), or anyone with a well-formed id ("open").
    entry: str = "signed"
    allowlist: str | None = None
    platform: PlatformSpec | None = None
    # Studies (in the same database) whose participants may not take part in this one.
    exclude_studies: tuple[str, ...] = ()
    # Bonus paid per point the participant scores, capped at bonus_max per game (None: no cap).
    bonus_per_point: float = 0.0
    bonus_max: float | None = None
    bonus_currency: str = "GBP"
    # Tries at the rules questions before play (0: no comprehension check).
    comprehension_attempts: int = 0
    attention_check: bool = False

    def __post_init__(self) -> None:
        _check_name(self.study, "study")
        if not self.agents:
            raise StudyConfigError("agents: a study needs at least one agent")
        names = [a.name for a in self.agents]
        if len(set(names)) != len(names):
            raise StudyConfigError(f"agents: names must be unique, got {names}")
        if not self.contexts:
            rng = np.random.default_rng(self.seed)
            object.__setattr__(self, "contexts", tuple(sample_context(rng) for _ in range(20)))
        if self.protocol not in PROTOCOLS:
            raise StudyConfigError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        if self.protocol == "acts":
            dialogue_models = [a.name for a in self.agents if a.player is not None and a.player.startswith("lm:")]
            if dialogue_models:
                raise StudyConfigError(f"agents {dialogue_models}: a dialogue model (lm:) plays only the text game; "
                                       "set protocol: text")
        checks = [("max_turns", self.max_turns >= 2, "at least 2"),
                  ("max_messages", self.max_messages >= 1, "at least 1"),
                  ("think_time_s", self.think_time_s >= 0, ">= 0"),
                  ("idle_timeout_s", self.idle_timeout_s > 0, "> 0"),
                  ("session_time_s", self.session_time_s > 0, "> 0"),
                  ("sessions_per_participant", self.sessions_per_participant >= 1, "at least 1"),
                  ("max_message_chars", self.max_message_chars >= 0, ">= 0"),
                  ("rate_per_s", self.rate_per_s > 0, "> 0"),
                  ("rate_burst", self.rate_burst >= 1, "at least 1")]
        checks += [("bonus_per_point", self.bonus_per_point >= 0, ">= 0"),
                   ("bonus_max", self.bonus_max is None or self.bonus_max >= 0, ">= 0"),
                   ("comprehension_attempts", self.comprehension_attempts >= 0, ">= 0")]
        for name, ok, rule in checks:
            if not ok:
                raise StudyConfigError(f"{name} must be {rule}, got {getattr(self, name)!r}")
        if self.entry not in ENTRY_MODES:
            raise StudyConfigError(f"entry must be one of {', '.join(ENTRY_MODES)}, got {self.entry!r}")
        if (self.entry == "allowlist") != (self.allowlist is not None):
            raise StudyConfigError("entry: allowlist needs an allowlist file, and an allowlist file needs "
                                   "entry: allowlist")
        for name in self.exclude_studies:
            _check_name(name, "exclude_studies[]")
        if not isinstance(self.bonus_currency, str) or not re.fullmatch(r"[A-Z]{3}", self.bonus_currency):
            raise StudyConfigError(f"bonus.currency must be a three-letter code like GBP, got {self.bonus_currency!r}")

    @property
    def pid_pattern(self) -> re.Pattern:
        """The form participant ids take in this study's links."""
        return PID_PATTERNS[None if self.platform is None else self.platform.name]

    def agent(self, name: str) -> AgentSpec:
        for spec in self.agents:
            if spec.name == name:
                return spec
        raise KeyError(f"no agent named {name!r} in study {self.study!r}; agents: {[a.name for a in self.agents]}")

    @classmethod
    def from_dict(cls, raw: dict, base_dir: Path | None = None) -> StudyConfig:
        if isinstance(raw, list):  # a bare list of agents
            raw = {"agents": raw}
        if not isinstance(raw, dict):
            raise StudyConfigError(f"a study config is a mapping of settings, got {type(raw).__name__}")
        # The bonus is one mapping in YAML (bonus: {per_point, max, currency}) and three fields here.
        allowed = {f.name for f in fields(cls) if not f.name.startswith("bonus_")} | {"bonus"}
        unknown = set(raw) - allowed
        if unknown:
            raise StudyConfigError(f"unknown settings {sorted(unknown)}; allowed: {sorted(allowed)}")
        kwargs = dict(raw)
        if "agents" in kwargs:
            agents = kwargs["agents"]
            if not isinstance(agents, list):
                raise StudyConfigError("agents must be a list")
            kwargs["agents"] = tuple(AgentSpec.from_dict(a, f"agents[{i}]") for i, a in enumerate(agents))
        if "contexts" in kwargs:
            kwargs["contexts"] = _parse_contexts(kwargs["contexts"], base_dir, kwargs.get("seed", 0))
        for key in ("think_time_s", "idle_timeout_s", "session_time_s", "rate_per_s"):
            if key in kwargs:
                kwargs[key] = _number(kwargs[key], key, float)
        for key in ("max_turns", "max_messages", "sessions_per_participant", "max_message_chars", "rate_burst",
                    "seed"):
            if key in kwargs:
                kwargs[key] = _number(kwargs[key], key, int)
        if "study" in kwargs:
            kwargs["study"] = str(kwargs["study"])
        if "platform" in kwargs:
            kwargs["platform"] = None if kwargs["platform"] is None else PlatformSpec.from_dict(kwargs["platform"])
        if "exclude_studies" in kwargs:
            excluded = kwargs["exclude_studies"]
            if not isinstance(excluded, list):
                raise StudyConfigError(f"exclude_studies must be a list of study names, got {excluded!r}")
            kwargs["exclude_studies"] = tuple(str(x) for x in excluded)
        if "bonus" in kwargs:
            kwargs.update(_parse_bonus(kwargs.pop("bonus")))
        for key in ("comprehension_attempts",):
            if key in kwargs:
                kwargs[key] = _number(kwargs[key], key, int)
        if "attention_check" in kwargs and not isinstance(kwargs["attention_check"], bool):
            raise StudyConfigError(f"attention_check must be true or false, got {kwargs['attention_check']!r}")
        if "entry" in kwargs:
            kwargs["entry"] = str(kwargs["entry"])
        if "protocol" in kwargs and not isinstance(kwargs["protocol"], str):
            raise StudyConfigError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {kwargs['protocol']!r}")
        if kwargs.get("allowlist") is not None:
            allowlist = Path(str(kwargs["allowlist"]))
            if not allowlist.is_absolute() and base_dir is not None:
                allowlist = base_dir / allowlist
            if not allowlist.is_file():
                raise StudyConfigError(f"allowlist {allowlist} is not a file (one participant id a line)")
            kwargs["allowlist"] = str(allowlist.resolve())
        if kwargs.get("pages_dir") is not None:
            pages = Path(str(kwargs["pages_dir"]))
            if not pages.is_absolute() and base_dir is not None:
                pages = base_dir / pages
            if not pages.is_dir():
                raise StudyConfigError(f"pages_dir {pages} is not a folder")
            kwargs["pages_dir"] = str(pages.resolve())
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, path: str | Path) -> StudyConfig:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise StudyConfigError(f"no study config at {path}")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise StudyConfigError(f"{path} is not valid YAML: {err}") from None
        try:
            return cls.from_dict(raw or {}, base_dir=path.parent)
        except StudyConfigError as err:
            raise StudyConfigError(f"{path}: {err}") from None


def _number(value: Any, key: str, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and int(value) != value):
        raise StudyConfigError(f"{key} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    return kind(value)


def _parse_bonus(raw: Any) -> dict:
    if not isinstance(raw, dict):
        raise StudyConfigError(f"bonus must be a mapping like {{per_point: 0.05, max: 0.5, currency: GBP}}, got {raw!r}")
    unknown = set(raw) - {"per_point", "max", "currency"}
    if unknown:
        raise StudyConfigError(f"bonus: unknown keys {sorted(unknown)}; allowed: currency, max, per_point")
    out = {"bonus_per_point": _number(raw.get("per_point", 0.0), "bonus.per_point", float)}
    if raw.get("max") is not None:
        out["bonus_max"] = _number(raw["max"], "bonus.max", float)
    if "currency" in raw:
        out["bonus_currency"] = raw["currency"]
    return out


def _parse_contexts(raw: Any, base_dir: Path | None, seed: Any) -> tuple[Context, ...]:
    if isinstance(raw, str):
        path = Path(raw)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return tuple(load_contexts(path, skip_invalid=True))
    if isinstance(raw, dict):
        unknown = set(raw) - {"count", "seed"}
        if unknown:
            raise StudyConfigError(f"contexts: unknown keys {sorted(unknown)}; use {{count: N, seed: S}} or a file path")
        count = _number(raw.get("count", 20), "contexts.count", int)
        if count < 1:
            raise StudyConfigError(f"contexts.count must be at least 1, got {count}")
        rng = np.random.default_rng(_number(raw.get("seed", seed), "contexts.seed", int))
        return tuple(sample_context(rng) for _ in range(count))
    if isinstance(raw, list):
        try:
            return tuple(Context(tuple(c["counts"]), (tuple(c["values"][0]), tuple(c["values"][1]))) for c in raw)
        except (KeyError, TypeError, IndexError, ValueError) as err:
            raise StudyConfigError(f"contexts: a list entry is {{counts: [..], values: [[..], [..]]}} ({err})") from None
    raise StudyConfigError(f"contexts must be a file path, {{count: N, seed: S}} or a list, got {raw!r}")


DEFAULT_STUDY = StudyConfig()
