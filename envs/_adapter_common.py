"""Helpers shared by the negotiation adapters (PettingZoo, Gymnasium and vector): the observation space,
argument checks, context resolution, the end-of-episode info and the partner checks.

Private to :mod:`parley.envs`: the adapters import it; users import the adapters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from parley.envs.contexts import load_contexts
from parley.envs.negotiation import (
    DEFAULT_MAX_TURNS,
    MAX_ITEM_COUNT,
    NUM_ACTIONS,
    VALUE_TOTAL,
    Context,
    NegotiationState,
    ObservationLayout,
    describe_items,
    sample_context,
)
from parley.envs.policy import Policy

AGENTS: tuple[str, str] = ("agent_0", "agent_1")
ILLEGAL_ACTION_MODES = ("raise", "penalize")
RENDER_MODES = ("ansi", "human")


def observation_bounds(max_turns: int = DEFAULT_MAX_TURNS) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest value of each entry of the observation vector."""
    lay = ObservationLayout(max_turns)
    low = np.zeros(lay.size, dtype=np.float32)
    high = np.ones(lay.size, dtype=np.float32)
    high[lay.counts] = MAX_ITEM_COUNT
    high[lay.values] = VALUE_TOTAL
    high[lay.partner_offer] = MAX_ITEM_COUNT
    high[lay.own_offer] = MAX_ITEM_COUNT
    high[lay.history_acts] = NUM_ACTIONS
    high[lay.history_speakers] = 2
    return low, high


def observation_space(max_turns: int = DEFAULT_MAX_TURNS, seed: int | None = None) -> spaces.Dict:
    """The Dict observation space shared by all negotiation adapters."""
    low, high = observation_bounds(max_turns)
    return spaces.Dict(
        {
            "observation": spaces.Box(low, high, dtype=np.float32),
            "action_mask": spaces.Box(0, 1, shape=(NUM_ACTIONS,), dtype=np.int8),
        },
        seed=seed,
    )


def resolve_contexts(contexts: None | str | Path | Sequence[Context]) -> list[Context] | None:
    """None (sample fresh contexts), a file path (``load_contexts``) or a non-empty list of contexts."""
    if contexts is None:
        return None
    if isinstance(contexts, (str, Path)):
        return load_contexts(contexts)
    if isinstance(contexts, Context):
        return [contexts]
    contexts = list(contexts)
    if not contexts:
        raise ValueError("contexts must not be empty: pass None to sample contexts, a path, or a list of Context")
    bad = [c for c in contexts if not isinstance(c, Context)]
    if bad:
        raise TypeError(f"contexts must be Context objects; got {type(bad[0]).__name__}: {bad[0]!r}")
    return contexts


def check_common_args(max_turns: int, first_player: int | None, illegal_action: str,
                      render_mode: str | None) -> None:
    """Clear errors for the constructor arguments every adapter shares."""
    if not isinstance(max_turns, (int, np.integer)) or max_turns < 1:
        raise ValueError(f"max_turns must be a positive integer, got {max_turns!r}")
    if first_player not in (None, 0, 1):
        raise ValueError(f"first_player must be None (drawn per episode), 0 or 1; got {first_player!r}")
    if illegal_action not in ILLEGAL_ACTION_MODES:
        raise ValueError(f"illegal_action must be one of {ILLEGAL_ACTION_MODES}, got {illegal_action!r}")
    check_render_mode(render_mode)


def check_render_mode(render_mode: str | None) -> None:
    """A clear error for a render mode the negotiation envs do not have."""
    if render_mode is not None and render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be None or one of {RENDER_MODES}, got {render_mode!r}")


def render_text(render_mode: str | None, text: Callable[[], str]) -> str | None:
    """``render()`` of a text-rendering env: ``text()`` returned ("ansi") or printed ("human"); with no
    render mode, a warning and None (Gymnasium's convention)."""
    if render_mode is None:
        gymnasium.logger.warn("render() was called without a render_mode; use render_mode='ansi' or 'human'")
        return None
    if render_mode == "human":
        print(text())
        return None
    return text()


def draw_context(rng: np.random.Generator, contexts: list[Context] | None) -> Context:
    if contexts is None:
        return sample_context(rng)
    if len(contexts) == 1:
        return contexts[0]
    return contexts[int(rng.integers(len(contexts)))]


def outcome_info(state: NegotiationState, illegal_by: str | None = None) -> dict[str, Any]:
    """What an episode's end reports in ``info``: outcome metrics and how the game ended."""
    info = dict(state.metrics())
    info["deal"] = state.agreed_split
    info["walked_away_by"] = None if state.walked_away_by is None else AGENTS[state.walked_away_by]
    info["illegal_action"] = illegal_by
    return info


def context_header(ctx: Context, names: Sequence[str] = AGENTS) -> str:
    return (f"Items: {describe_items(ctx.counts)}. Values (book, hat, ball): "
            f"{names[0]} {ctx.values[0]}, {names[1]} {ctx.values[1]}.")



#: How many games in a row the partner may end before the learner's first act before reset gives up.
MAX_REPLAYS = 1000


def check_partner(partner: Any) -> Policy:
    """``partner`` itself when it is a Policy (``act`` and ``act_batch``); a clear TypeError otherwise."""
    if isinstance(partner, str):
        raise TypeError(
            f"partner must be a Policy object, got the name {partner!r}. Build a scripted partner with "
            f"parley.agents.partners.scripted.make_partner({partner!r}), or create the env by name with "
            f"gymnasium.make('parley/Negotiation-v0', partner={partner!r}) (or gymnasium.make_vec), which "
            "resolves partner names")
    if not (callable(getattr(partner, "act", None)) and callable(getattr(partner, "act_batch", None))):
        raise TypeError(f"partner must be a Policy with act() and act_batch(); got {type(partner).__name__}")
    return partner


def partner_name(partner: Policy) -> str:
    return str(getattr(partner, "name", type(partner).__name__))
