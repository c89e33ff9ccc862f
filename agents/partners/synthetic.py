"""A synthetic corpus: dialogues among the scripted partners, for when no human corpus is given.

The dialogues have the corpus's form (:class:`~parley.envs.corpus.Dialogue`), verbalised with
:func:`~parley.envs.negotiation.verbalize_act`, so the parser and every corpus tool read them like
human text.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from parley.envs.corpus import Dialogue, Game, ParsedAct, Utterance, dialogue_to_game
from parley.envs.negotiation import (
    DEFAULT_MAX_TURNS,
    Context,
    decode_act,
    sample_context_arrays,
    verbalize_act,
)
from parley.envs.play import play_batch

__all__ = ["SYNTHETIC_PAIRS", "synthetic_corpus", "synthetic_game"]


#: Pairs of scripted partners whose games make the synthetic corpus: mostly cooperative, some tough.
SYNTHETIC_PAIRS: tuple[tuple[str, str], ...] = (
    ("fair_split", "fair_split"), ("linear", "conceder"), ("conceder", "boulware"), ("pareto", "linear"),
    ("tit_for_tat", "fair_split"), ("boulware", "linear"), ("conceder", "conceder"), ("pareto", "tit_for_tat"),
)


def synthetic_corpus(num_dialogues: int = 2000, seed: int = 0, max_turns: int = DEFAULT_MAX_TURNS,
                     pairs: Sequence[tuple[str, str]] = SYNTHETIC_PAIRS) -> list[Dialogue]:
    """Dialogues among the scripted partners, standing in for the human corpus when none is given.

    Contexts come from :func:`~parley.envs.negotiation.sample_context_arrays`; each pair in ``pairs``
    plays an equal share, the first mover drawn at random. Acts are verbalised with
    :func:`~parley.envs.negotiation.verbalize_act`, so the parser reads them like human text; the
    parsed acts are stored (and checked against the acts played).
    """
    from parley.agents.partners.scripted import make_partner

    if num_dialogues < 1:
        raise ValueError(f"num_dialogues must be positive, got {num_dialogues}")
    rng = np.random.default_rng(seed)
    per_pair = int(np.ceil(num_dialogues / len(pairs)))
    dialogues: list[Dialogue] = []
    for p, (name_a, name_b) in enumerate(pairs):
        agents = [make_partner(name_a, seed=seed * 100 + 2 * p), make_partner(name_b, seed=seed * 100 + 2 * p + 1)]
        counts, values = sample_context_arrays(rng, per_pair)
        first = rng.integers(0, 2, size=per_pair)
        games = play_batch(agents, counts, values, first, max_turns=max_turns)
        for g in range(per_pair):
            ctx = Context(tuple(int(x) for x in games.counts[g]),
                          tuple(tuple(int(x) for x in v) for v in games.values[g]))
            utterances = [Utterance(speaker, verbalize_act(action, ctx.counts), ParsedAct(*decode_act(action)))
                          for speaker, action in games.acts(g)]
            outcome = "agree" if games.agreed[g] else "no_agreement"
            selection = tuple(int(x) for x in games.agreed_split[g]) if games.agreed[g] else None
            dialogues.append(Dialogue(ctx, utterances, outcome, selection, f"synthetic:{name_a}-{name_b}"))
    order = rng.permutation(len(dialogues))[:num_dialogues]
    return [dialogues[i] for i in order]


def synthetic_game(dialogue: Dialogue) -> Game:
    """A synthetic dialogue's game: its stored acts are exact, so the whole game is used."""
    return dialogue_to_game(dialogue)
