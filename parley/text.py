"""Text players and the text negotiation env by name: the one place names become players for the text game.

``make_text_player(spec)`` accepts a scripted partner's name (``boulware``; played through the realiser),
a saved policy directory (``parley.agents.load_policy``; also through the realiser), a language model
directory written by ``parley train-lm``, or an object that already plays (a text player or a coarse-act
policy). ``make_text_env`` is the entry point of the Gymnasium id ``parley/NegotiationText-v0``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from parley.envs.negotiation import DEFAULT_MAX_TURNS
from parley.envs.negotiation_text_v0 import NegotiationTextGymEnv
from parley.envs.realiser import ActTextPlayer, TextPolicy, as_text_player

__all__ = ["make_text_player", "make_text_env"]


def make_text_player(spec: Any, *, seed: int | None = None, partner_kwargs: dict[str, Any] | None = None,
                     max_turns: int = DEFAULT_MAX_TURNS) -> TextPolicy:
    """A player of the text game from a name, a directory or an object (see the module docstring)."""
    if not isinstance(spec, (str, Path)):
        if partner_kwargs:
            raise ValueError("partner_kwargs only applies when the player is given by a scripted partner's name")
        return as_text_player(spec, seed=seed, max_turns=max_turns)
    from parley.agents.partners.scripted import list_partners, make_partner

    names = list_partners()
    if isinstance(spec, str) and spec in names:
        return ActTextPlayer(make_partner(spec, **(partner_kwargs or {})), seed=seed, max_turns=max_turns)
    if partner_kwargs:
        raise ValueError("partner_kwargs only applies when the player is given by a scripted partner's name")
    path = Path(spec)
    from parley.agents.lm.model import is_language_model_dir

    if is_language_model_dir(path):
        from parley.agents.lm.player import LanguageModelPlayer

        return LanguageModelPlayer.load(path, seed=seed)
    if path.exists():
        from parley.agents import load_policy

        return ActTextPlayer(load_policy(path), seed=seed, max_turns=max_turns, name=path.name)
    raise ValueError(f"unknown player {str(spec)!r}: give a scripted partner ({', '.join(names)}), a saved policy "
                     "directory, or a language model directory written by `parley train-lm`")


def make_text_env(partner: Any = "random", partner_kwargs: dict[str, Any] | None = None,
                  partner_seed: int | None = None, **kwargs: Any) -> NegotiationTextGymEnv:
    """``parley/NegotiationText-v0``: a learner against ``partner`` (anything :func:`make_text_player` takes).

    The other keyword arguments go to :class:`~parley.envs.negotiation_text_v0.NegotiationTextGymEnv`.
    """
    player = make_text_player(partner, seed=partner_seed, partner_kwargs=partner_kwargs)
    return NegotiationTextGymEnv(player, **kwargs)
