"""The shortcuts of the batched negotiation step give what the plain paths give.

Partners of a pool answer their games grouped, runs of table-backed scripted partners in one pass; the
batched rules write proposals from per-layout tables; the Pareto partner's memo keeps two sorted levels.
Each test compares against the plain path (each partner's own ``act_batch``, the scalar game, a dict).
"""

from __future__ import annotations

import numpy as np
import pytest

from parley.agents.partners import scripted
from parley.agents.partners.pool import PartnerPoolVectorEnv
from parley.agents.partners.scripted import ObservationView, act_batch_by_partner, make_partner
from parley.envs.negotiation import BatchedNegotiation, Context, NegotiationState, sample_context_arrays

POOL_WITH_RANDOM = ("boulware", "random", "linear", "conceder", "hardliner", "fair_split", "tit_for_tat", "pareto")
#: Settings that differ between partners, so that a run answering together must keep each one's own.
SETTINGS = {"boulware": {"reservation": 3.0}, "linear": {"reservation": 7.0, "accept_final_offers": False},
            "conceder": {"k": 0.3}, "hardliner": {"accept_at": 8.0}, "fair_split": {"share": 0.6},
            "tit_for_tat": {"reservation": 4.0, "kindness": 1.0}}


def build(name: str, seed: int = 1):
    return make_partner(name, seed=seed, **SETTINGS.get(name, {}))


def mover_states(seed: int, batch: int = 1500, max_turns: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Observations and masks of the movers of live games at every turn, played by random partners."""
    rng = np.random.default_rng(seed)
    player = make_partner("random", seed=seed)
    game = BatchedNegotiation(batch, max_turns=max_turns)
    counts, values = sample_context_arrays(rng, batch)
    game.reset_games(np.arange(batch), counts, values, rng.integers(2, size=batch))
    observations, masks = [], []
    while not game.done.all():
        live = np.flatnonzero(~game.done)
        obs, mask = game.observations(game.current_player[live], live), game.legal_masks(live)
        observations.append(obs)
        masks.append(mask)
        actions = np.zeros(batch, dtype=np.int64)
        actions[live] = player.act_batch(obs, mask)
        game.apply_actions(actions)
    return np.concatenate(observations), np.concatenate(masks)


@pytest.mark.parametrize("odd_masks", [False, True])
def test_partners_answering_together_act_as_each_alone(odd_masks):
    obs, masks = mover_states(seed=5)
    if odd_masks:  # masks the rules would not make: off-table rows, and rows with nothing legal
        rng = np.random.default_rng(6)
        masks = masks.copy()
        odd = rng.random(len(masks)) < 0.1
        masks[odd, rng.integers(125)] = 0
        masks[rng.random(len(masks)) < 0.02] = 0
    bounds = np.sort(np.random.default_rng(7).integers(len(obs), size=len(POOL_WITH_RANDOM) - 1))
    bounds = np.concatenate([[0], bounds, [len(obs)]])
    together = act_batch_by_partner([build(n) for n in POOL_WITH_RANDOM], bounds, obs, masks)
    alone = np.concatenate([build(n).act_batch(obs[lo:hi], masks[lo:hi])
                            for n, lo, hi in zip(POOL_WITH_RANDOM, bounds[:-1], bounds[1:])])
    np.testing.assert_array_equal(together, alone)


def test_partner_runs_are_only_partners_acting_by_the_scripted_rule():
    joins = {name: scripted._answers_together(make_partner(name)) for name in scripted.PARTNERS}
    assert joins == {"random": False, "hardliner": True, "fair_split": True, "boulware": True, "linear": True,
                     "conceder": True, "tit_for_tat": True, "pareto": True}

    class OwnRule(scripted.TimeDependentPartner):
        def _act_chunk(self, observations, action_masks):
            return np.full(len(observations), 251)

    assert not scripted._answers_together(OwnRule())


def test_pool_answers_as_each_partner_called_on_its_own_games_in_row_order():
    env = PartnerPoolVectorEnv(600, [build(n) for n in POOL_WITH_RANDOM])
    env.reset(seed=3)
    game = env.game
    learner = make_partner("random", seed=4)
    compared = 0
    for _ in range(12):
        # Let the learner act, then ask for the partners' replies three ways before they are applied.
        live = np.flatnonzero(~game.done & (game.current_player == env.side))
        actions = np.zeros(env.num_envs, dtype=np.int64)
        actions[live] = learner.act_batch(game.observations(env.side[live], live), game.legal_masks(live))
        game.apply_actions(actions, active=np.isin(np.arange(env.num_envs), live))
        rows = np.flatnonzero(~game.done & (game.current_player != env.side))
        if rows.size == 0:
            break
        obs, masks = game.observations(1 - env.side[rows], rows), game.legal_masks(rows)
        answers = []
        for ask in ("each partner alone", "dispatcher", "env"):
            for partner in env.pool:
                partner.seed(9)
            if ask == "each partner alone":
                which = env.assignment[rows]
                acts = np.zeros(rows.size, dtype=np.int64)
                for index, partner in enumerate(env.pool):
                    sel = np.flatnonzero(which == index)
                    if sel.size:
                        acts[sel] = partner.act_batch(obs[sel], masks[sel])
            else:
                acts = env.partner.act_batch(obs, masks) if ask == "dispatcher" else env._partner_acts(rows)
            answers.append(acts)
        np.testing.assert_array_equal(answers[1], answers[0])
        np.testing.assert_array_equal(answers[2], answers[0])
        actions = np.zeros(env.num_envs, dtype=np.int64)
        actions[rows] = answers[0]
        game.apply_actions(actions, active=np.isin(np.arange(env.num_envs), rows))
        compared += rows.size
    assert compared > 1000


def test_row_blocks_share_the_decoded_fields():
    obs, _ = mover_states(seed=8, batch=300)
    view = ObservationView(obs).decode_all()
    block = view.select(slice(40, 170))
    fresh = ObservationView(obs[40:170])
    for field in ("counts", "values", "offer_items", "own_kept", "history", "from_partner", "turn", "has_offer",
                  "partner_insisted", "partner_kept_total"):
        np.testing.assert_array_equal(getattr(block, field), getattr(fresh, field), err_msg=field)
    assert np.shares_memory(block._all_ints, view._all_ints)
    picked = np.array([5, 2, 299, 170])
    chosen, fresh = view.select(picked), ObservationView(obs[picked])
    for field in ("counts", "values", "history", "partner_kept_total", "time"):
        np.testing.assert_array_equal(getattr(chosen, field), getattr(fresh, field), err_msg=field)


@pytest.mark.parametrize("max_turns_pair", [(10, 4), (3, 7)])
def test_games_of_different_lengths_side_by_side_observe_as_the_scalar_game(max_turns_pair):
    # The proposal blocks and turn fractions come from tables per game length: games of two lengths
    # stepped in turn must each observe what the scalar game observes.
    rng = np.random.default_rng(sum(max_turns_pair))
    batch = 40
    games, states, players = [], [], make_partner("random", seed=2)
    for max_turns in max_turns_pair:
        counts, values = sample_context_arrays(rng, batch)
        firsts = rng.integers(2, size=batch)
        game = BatchedNegotiation(batch, max_turns=max_turns)
        game.reset_games(np.arange(batch), counts, values, firsts)
        games.append(game)
        states.append([NegotiationState(Context(tuple(c), (tuple(v[0]), tuple(v[1]))), max_turns=max_turns,
                                        first_player=int(f)) for c, v, f in zip(counts, values, firsts)])
    for _ in range(max(max_turns_pair) + 1):
        for game, scalar in zip(games, states):
            for seat in (0, 1):
                expected = np.stack([s.observation(seat) for s in scalar])
                np.testing.assert_array_equal(game.observations(np.full(batch, seat)), expected)
            actions = players.act_batch(game.observations(game.current_player), game.legal_masks())
            live = ~game.done
            game.apply_actions(actions)
            for i in np.flatnonzero(live):
                scalar[i].apply_action(int(actions[i]))


def test_answer_memo_levels_return_every_stored_answer():
    rng = np.random.default_rng(0)
    memo = scripted._AnswerMemo()
    memo.merge_at, memo.max_size = 64, 5000
    stored: dict[int, int] = {}
    resets = 0
    for _ in range(120):
        queries = rng.integers(0, 20000, size=200)
        answers, found = memo.get(queries)
        expected_found = np.array([q in stored for q in queries.tolist()])
        np.testing.assert_array_equal(found, expected_found)
        np.testing.assert_array_equal(answers[found], [stored[q] for q in queries[found].tolist()])
        new = np.unique(queries[~found])
        values = rng.integers(0, 125, size=new.size)
        if len(stored) + new.size > memo.max_size:
            stored.clear()  # the memo starts over when full
            resets += 1
        memo.add(new, values)
        stored.update(zip(new.tolist(), values.tolist()))
        assert memo.keys.size == len(stored)
    assert resets >= 1
