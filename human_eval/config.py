"""Study configuration: which agents people meet, on which contexts, under which time limits.

A study is described by a YAML file (``agents.yaml``)::

    study: pilot-2026              # the ``study`` parameter of the participant links
    agents:                        # balanced random assignment over these
      - {name: boulware, partner: boulware}          # a scripted partner (parley.agents.partners.scripted)
      - {name: tough, partner: boulware, params: {e: 0.1}}
      - {name: ppo-v3, checkpoint: runs/ppo/final}  # a trained policy (parley.agents.load_policy)
    contexts: {count: 20, seed: 0}  # generated; or a file path readable by load_contexts
    max_turns: 10
    think_time_s: 1.5              # how long the agent "thinks" before its reply is shown
    idle_timeout_s: 210            # no act for this long on the person's turn -> no deal
    session_time_s: 1200           # a whole negotiation may take at most this long
    sessions_per_participant: 1
    pages_dir: pages               # optional: your own index.html (consent, instructions), style.css, ...

Every field except ``agents`` has a default; :data:`DEFAULT_STUDY` needs no file at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from parley.envs.negotiation import Context, load_contexts, sample_context

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class StudyConfigError(ValueError):
    """A study configuration that cannot be used; the message says which field and why."""


def _check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 64 or not set(value) <= _NAME_CHARS:
        raise StudyConfigError(f"{what} must be 1-64 characters of letters, digits, '-', '_' or '.', got {value!r}")
    return value


@dataclass(frozen=True)
class AgentSpec:
    """One agent of a study: a scripted ``partner`` (with ``params``) or a trained ``checkpoint``."""

    name: str
    partner: str | None = None
    checkpoint: str | None = None
    params: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: Any, where: str = "agents") -> AgentSpec:
        if isinstance(raw, str):
            raw = {"name": raw, "partner": raw}
        if not isinstance(raw, dict):
            raise StudyConfigError(f"{where}: each agent is a mapping like {{name: x, partner: boulware}}, got {raw!r}")
        unknown = set(raw) - {"name", "partner", "checkpoint", "params"}
        if unknown:
            raise StudyConfigError(f"{where}: unknown keys {sorted(unknown)}; allowed: name, partner, checkpoint, params")
        name = _check_name(raw.get("name"), f"{where}.name")
        partner, checkpoint = raw.get("partner"), raw.get("checkpoint")
        if (partner is None) == (checkpoint is None):
            raise StudyConfigError(f"{where} ({name}): give exactly one of 'partner' (a scripted partner name) "
                                   "or 'checkpoint' (a path for load_policy)")
        params = raw.get("params") or {}
        if not isinstance(params, dict):
            raise StudyConfigError(f"{where} ({name}): params must be a mapping, got {params!r}")
        return cls(name=name, partner=None if partner is None else str(partner),
                   checkpoint=None if checkpoint is None else str(checkpoint), params=dict(params))


@dataclass(frozen=True)
class StudyConfig:
    """Everything that defines a study. Build with :meth:`from_dict` / :meth:`from_yaml` to validate."""

    study: str = "default"
    agents: tuple[AgentSpec, ...] = (AgentSpec("boulware", partner="boulware"),
                                     AgentSpec("conceder", partner="conceder"))
    contexts: tuple[Context, ...] = ()
    max_turns: int = 10
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
        checks = [("max_turns", self.max_turns >= 2, "at least 2"),
                  ("think_time_s", self.think_time_s >= 0, ">= 0"),
                  ("idle_timeout_s", self.idle_timeout_s > 0, "> 0"),
                  ("session_time_s", self.session_time_s > 0, "> 0"),
                  ("sessions_per_participant", self.sessions_per_participant >= 1, "at least 1"),
                  ("max_message_chars", self.max_message_chars >= 0, ">= 0"),
                  ("rate_per_s", self.rate_per_s > 0, "> 0"),
                  ("rate_burst", self.rate_burst >= 1, "at least 1")]
        for name, ok, rule in checks:
            if not ok:
                raise StudyConfigError(f"{name} must be {rule}, got {getattr(self, name)!r}")

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
        allowed = {f.name for f in fields(cls)}
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
        for key in ("max_turns", "sessions_per_participant", "max_message_chars", "rate_burst", "seed"):
            if key in kwargs:
                kwargs[key] = _number(kwargs[key], key, int)
        if "study" in kwargs:
            kwargs["study"] = str(kwargs["study"])
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
