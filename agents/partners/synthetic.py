"""A synthetic corpus: dialogues among the scripted partners, for when no human corpus is given.

The dialogues have the corpus's form (:class:`~parley.envs.corpus.Dialogue`), verbalised with
:func:`~parley.envs.negotiation.verbalize_act`, so the parser and every corpus tool read them like
human text.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from parley.envs.corpus import Dialogue, Game, ParsedAct, Utterance, dialogue_to_game
from parley.envs.negotiation import DEFAULT_MAX_TURNS, Context, decode_act, verbalize_act

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
    from parley.envs.negotiation import BatchedNegotiation, sample_context_arrays

    if num_dialogues < 1:
        raise ValueError(f"num_dialogues must be positive, got {num_dialogues}")
    rng = np.random.default_rng(seed)
    per_pair = int(np.ceil(num_dialogues / len(pairs)))
    dialogues: list[Dialogue] = []
    for p, (name_a, name_b) in enumerate(pairs):
        agents = [make_partner(name_a, seed=seed * 100 + 2 * p), make_partner(name_b, seed=seed * 100 + 2 * p + 1)]
        env = BatchedNegotiation(per_pair, max_turns=max_turns)
        counts, values = sample_context_arrays(rng, per_pair)
        first = rng.integers(0, 2, size=per_pair)
        env.reset_games(np.arange(per_pair), counts, values, first)
        while not env.done.all():
            live = ~env.done
            actions = np.zeros(per_pair, dtype=np.int64)
            masks = env.legal_masks()
            for side in (0, 1):
                rows = np.flatnonzero(live & (env.current_player == side))
                if rows.size:
                    obs = env.observations(np.full(per_pair, side))[rows]
                    actions[rows] = agents[side].act_batch(obs, masks[rows])
            env.apply_actions(actions)
        for g in range(per_pair):
            ctx = Context(tuple(int(x) for x in env.counts[g]), tuple(tuple(int(x) for x in v) for v in env.values[g]))
            utterances = []
            for t in range(int(env.turn[g])):
                action, speaker = int(env.history_actions[g, t]), int(env.history_speakers[g, t])
                kind, split = decode_act(action)
                utterances.append(Utterance(speaker, verbalize_act(action, ctx.counts), ParsedAct(kind, split)))
            outcome = "agree" if env.agreed[g] else "no_agreement"
            selection = tuple(int(x) for x in env.agreed_split[g]) if env.agreed[g] else None
            dialogues.append(Dialogue(ctx, utterances, outcome, selection, f"synthetic:{name_a}-{name_b}"))
    order = rng.permutation(len(dialogues))[:num_dialogues]
    return [dialogues[i] for i in order]


def synthetic_game(dialogue: Dialogue) -> Game:
    """A synthetic dialogue's game: its stored acts are exact, so the whole game is used."""
    return dialogue_to_game(dialogue)
