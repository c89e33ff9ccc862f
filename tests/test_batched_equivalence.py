"""The fast batched paths give exactly what straightforward reference code gives.

The batched rules keep both seats' observation vectors up to date instead of assembling them per call,
the target-driven scripted partners read their proposals from per-context tables, and the Pareto-aware
partner remembers its answers. Each test here plays many seeded games and compares, entry by entry,
against reference implementations written out in this file (the field-by-field assembly, the
history scans and the frontier walk as first written) or against the partners' general path.
"""

from __future__ import annotations

import numpy as np
import pytest

from parley.agents.partners import scripted
from parley.agents.partners.pool import PartnerPoolVectorEnv
from parley.agents.partners.scripted import (
    FairSplitPartner,
    HardlinerPartner,
    ObservationView,
    ParetoPartner,
    ScriptedPartner,
    TimeDependentPartner,
    TitForTatPartner,
    make_partner,
)
from parley.envs.negotiation import (
    AGREE_ACTION,
    INSIST_OFFSET,
    BatchedNegotiation,
    sample_context_arrays,
)
from parley.envs.negotiation_vector import NegotiationVectorEnv
from parley.envs.policy import BatchPolicy

DEFAULT_POOL = ("boulware", "linear", "conceder", "fair_split", "tit_for_tat", "pareto")


# ------------------------------------------------------------------------------------------------
# Reference implementations
# ------------------------------------------------------------------------------------------------


def assembled_observations(game: BatchedNegotiation, players: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Observations assembled field by field from the game's arrays."""
    sel = slice(None) if rows is None else rows
    counts = game.counts[sel]
    players = np.asarray(players, dtype=np.int64).reshape(len(counts))
    first = (players == 0)[:, None]
    values, has_proposed, last = game.values[sel], game.has_proposed[sel], game.last_proposals[sel]
    proposer = game.offer_proposer[sel]
    partner_offer = ((proposer >= 0) & (proposer != players))[:, None]
    return game.layout.assemble(
        counts=counts,
        values=np.where(first, values[:, 0], values[:, 1]),
        partner_offer_flag=partner_offer,
        partner_offer=(counts - game.offer_split[sel]) * partner_offer,
        own_offer_flag=np.where(first, has_proposed[:, :1], has_proposed[:, 1:]),
        own_offer=np.where(first, last[:, 0], last[:, 1]),
        turn_fraction=game.turn[sel] / game.max_turns,
        moved_first=game.first_player[sel] == players,
        history_acts=game.history_actions[sel] + 1,
        history_speakers=np.maximum((game.history_speakers[sel] ^ players[:, None]) + 1, 0),
    )


def reference_partner_insisted(view: ObservationView) -> np.ndarray:
    _, is_offer = view.partner_offers
    rank = np.cumsum(is_offer, axis=1)
    latest = is_offer & (rank == rank[:, -1:])
    return view.has_offer & np.any(latest & (view.history >= INSIST_OFFSET), axis=1)


def reference_partner_concession(view: ObservationView) -> np.ndarray:
    kept, is_offer = view.partner_offers
    total = (view.counts * view.values).sum(-1)[:, None]
    received_utility = total - np.take_along_axis(view.own_split_utilities, kept, axis=1)
    rank = np.cumsum(is_offer, axis=1)
    n = rank[:, -1]
    latest = np.where(is_offer & (rank == n[:, None]), received_utility, 0).sum(axis=1)
    previous = np.where(is_offer & (rank == (n - 1)[:, None]), received_utility, 0).sum(axis=1)
    return np.where(n >= 2, (latest - previous).astype(np.float64), np.nan)


def reference_believed_frontier(partner: ParetoPartner, view: ObservationView, feasible: np.ndarray) -> np.ndarray:
    table = partner._table
    rows = partner._table_rows(view)
    expected = partner.expected_partner_values(view)
    values = (view.counts * expected).sum(axis=1)[:, None] - expected @ scripted.ALL_SPLITS.T
    order = table.order[rows]
    ranked = np.take_along_axis(values, order, axis=1)
    usable = table.sorted_feasible[rows] & np.take_along_axis(feasible, order, axis=1)
    ranked = np.where(usable, ranked, -np.inf)
    best_so_far = np.maximum.accumulate(ranked, axis=1)
    start, end = table.level_start[rows], table.level_end[rows]
    above = np.where(start > 0, np.take_along_axis(best_so_far, np.maximum(start - 1, 0), axis=1), -np.inf)
    level_best = np.take_along_axis(best_so_far, end, axis=1)
    on_front = usable & (ranked > above + 1e-6) & (ranked >= level_best - 1e-6)
    frontier = np.zeros_like(on_front)
    np.put_along_axis(frontier, order, on_front, axis=1)
    return frontier


# Partners whose own tie_break (same values) takes them off the tables: every proposal goes through
# choose_splits and _closest_above over the (B, 125) utilities, as first written.
class GeneralTimeDependent(TimeDependentPartner):
    def tie_break(self, view):
        return ScriptedPartner.tie_break(self, view)


class GeneralFairSplit(FairSplitPartner):
    def tie_break(self, view):
        return FairSplitPartner.tie_break(self, view)


class GeneralHardliner(HardlinerPartner):
    def tie_break(self, view):
        return ScriptedPartner.tie_break(self, view)


class GeneralTitForTat(TitForTatPartner):
    def tie_break(self, view):
        return ScriptedPartner.tie_break(self, view)

    def partner_concession(self, view):
        return reference_partner_concession(view)


class GeneralPareto(ParetoPartner):
    """No memo (its own belief method) and the frontier walk with take_along_axis."""

    def belief(self, view):
        return ParetoPartner.belief(self, view)

    def believed_frontier(self, view, feasible):
        return reference_believed_frontier(self, view, feasible)


def reference_partner(name: str) -> BatchPolicy:
    builders = {
        "boulware": lambda: GeneralTimeDependent(exponent=0.2),
        "linear": lambda: GeneralTimeDependent(exponent=1.0),
        "conceder": lambda: GeneralTimeDependent(exponent=2.0),
        "fair_split": GeneralFairSplit,
        "hardliner": GeneralHardliner,
        "tit_for_tat": GeneralTitForTat,
        "pareto": GeneralPareto,
    }
    partner = builders[name]()
    partner.name = name
    return partner


class UniformLegal(BatchPolicy):
    """Uniform over each row's legal acts (reads the mask)."""

    def act_batch(self, observations, action_masks):
        masks = np.asarray(action_masks) > 0
        running = np.cumsum(masks, axis=1)
        pick = (self.rng.random(len(masks)) * np.maximum(running[:, -1], 1)).astype(np.int64)
        return np.where(running[:, -1] > 0, (running > pick[:, None]).argmax(axis=1), 251)


def live_states(seed: int, batch: int = 2048, max_turns: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Observations and masks of the current movers of live games a few acts in (a mix of partners)."""
    rng = np.random.default_rng(seed)
    drivers = [make_partner(n, seed=seed) for n in ("random", *DEFAULT_POOL, "hardliner")]
    game = BatchedNegotiation(batch, max_turns=max_turns)
    counts, values = sample_context_arrays(rng, batch)
    game.reset_games(np.arange(batch), counts, values, rng.integers(2, size=batch))
    observations, masks = [], []
    for _ in range(max_turns):
        live = np.flatnonzero(~game.done)
        if live.size == 0:
            break
        obs, mask = game.observations(game.current_player[live], live), game.legal_masks(live)
        observations.append(obs)
        masks.append(mask)
        choice = rng.integers(len(drivers), size=live.size)
        actions = np.zeros(batch, dtype=np.int64)
        for k, driver in enumerate(drivers):
            sel = np.flatnonzero(choice == k)
            if sel.size:
                actions[live[sel]] = driver.act_batch(obs[sel], mask[sel])
        game.apply_actions(actions, active=np.isin(np.arange(batch), live))
    return np.concatenate(observations), np.concatenate(masks)


# ------------------------------------------------------------------------------------------------
# The batched rules
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_turns", [10, 3])
def test_kept_observations_equal_assembled_ones_over_many_games(max_turns):
    rng = np.random.default_rng(max_turns)
    batch = 512
    game = BatchedNegotiation(batch, max_turns=max_turns)
    players = UniformLegal(seed=1)
    counts, values = sample_context_arrays(rng, batch)
    game.reset_games(np.arange(batch), counts, values, rng.integers(2, size=batch))
    checked = 0
    for _ in range(60):
        for seat in (0, 1):
            seats = np.full(batch, seat)
            np.testing.assert_array_equal(game.observations(seats), assembled_observations(game, seats))
        rows = np.flatnonzero(rng.random(batch) < 0.3)
        seats = rng.integers(2, size=rows.size)
        np.testing.assert_array_equal(game.observations(seats, rows), assembled_observations(game, seats, rows))
        checked += batch
        # Some games act, others wait; finished games restart with fresh contexts.
        active = rng.random(batch) < 0.8
        actions = players.act_batch(game.observations(game.current_player), game.legal_masks())
        game.apply_actions(actions, active=active)
        done = np.flatnonzero(game.done)
        if done.size:
            c, v = sample_context_arrays(rng, done.size)
            game.reset_games(done, c, v, rng.integers(2, size=done.size))
    assert checked >= 60 * batch


def test_copied_and_pickled_games_keep_their_observations_in_step():
    import copy
    import pickle

    rng = np.random.default_rng(11)
    game = BatchedNegotiation(64)
    counts, values = sample_context_arrays(rng, 64)
    game.reset_games(np.arange(64), counts, values, rng.integers(2, size=64))
    players = UniformLegal(seed=2)
    for clone in (copy.deepcopy(game), pickle.loads(pickle.dumps(game))):
        for _ in range(4):
            clone.apply_actions(players.act_batch(clone.observations(clone.current_player), clone.legal_masks()))
            seats = clone.current_player
            np.testing.assert_array_equal(clone.observations(seats), assembled_observations(clone, seats))


def test_observations_reject_seats_other_than_0_and_1():
    game = BatchedNegotiation(2)
    with pytest.raises(ValueError, match="0 or 1"):
        game.observations(np.array([0, 2]))


# ------------------------------------------------------------------------------------------------
# Scripted partners
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_view_history_scans_match_the_reference(seed):
    obs, _ = live_states(seed)
    view = ObservationView(obs)
    np.testing.assert_array_equal(view.partner_insisted, reference_partner_insisted(view))
    np.testing.assert_array_equal(TitForTatPartner().partner_concession(view), reference_partner_concession(view))


@pytest.mark.parametrize("name", ["boulware", "linear", "conceder", "fair_split", "hardliner", "tit_for_tat", "pareto"])
@pytest.mark.parametrize("max_turns", [10, 6])
def test_fast_partners_act_as_the_general_path(name, max_turns):
    fast, general = make_partner(name), reference_partner(name)
    for seed in range(2):
        obs, masks = live_states(10 * max_turns + seed, max_turns=max_turns)
        np.testing.assert_array_equal(fast.act_batch(obs, masks), general.act_batch(obs, masks))
        # Masks the rules would not make (some splits forbidden, as bool) go through the general path.
        odd = masks.copy()
        odd[:, :AGREE_ACTION] &= np.random.default_rng(seed).random((len(odd), AGREE_ACTION)) < 0.8
        np.testing.assert_array_equal(fast.act_batch(obs, odd > 0), general.act_batch(obs, odd > 0))
        np.testing.assert_array_equal(fast.act_batch(obs, odd), general.act_batch(obs, odd))
    # Finished games (empty masks) get walk_away from both.
    empty = np.zeros_like(masks[:50])
    np.testing.assert_array_equal(fast.act_batch(obs[:50], empty), general.act_batch(obs[:50], empty))


@pytest.mark.parametrize("name", ["boulware", "fair_split", "hardliner", "tit_for_tat"])
def test_fast_partners_act_as_the_general_path_outside_valid_contexts(name):
    obs, masks = live_states(8, batch=1024)
    odd = obs.copy()
    odd[::3, 3:6] += 1  # values no longer worth 10 in all
    odd[1::3, 0] = 5  # more books than the tables cover
    odd[2::6, 4] = -1
    fast, general = make_partner(name), reference_partner(name)
    np.testing.assert_array_equal(fast.act_batch(odd, masks), general.act_batch(odd, masks))


def test_pareto_memo_answers_repeat_states_from_memory_with_the_same_acts():
    fast, general = make_partner("pareto"), reference_partner("pareto")
    obs, masks = live_states(5)
    first = fast.act_batch(obs, masks)
    (memo,) = fast._memos.values()
    stored = memo.keys.size
    assert stored > 0
    # Asked again, every answer comes from the memo (nothing new is stored) and nothing changes.
    np.testing.assert_array_equal(fast.act_batch(obs, masks), first)
    assert memo.keys.size == stored
    np.testing.assert_array_equal(first, general.act_batch(obs, masks))


def test_pareto_subclass_with_its_own_belief_is_not_memoised():
    class Shifted(ParetoPartner):
        def expected_partner_values(self, view):
            return ParetoPartner.expected_partner_values(self, view)[:, ::-1]

    partner = Shifted()
    obs, masks = live_states(6, batch=256)
    partner.act_batch(obs, masks)
    assert partner._memos == {}


def test_table_backed_partners_cover_only_their_own_rules():
    class OwnTieBreak(TimeDependentPartner):
        def tie_break(self, view):
            return -scripted._ITEMS_KEPT[None]

    assert scripted._split_choice_table(TimeDependentPartner) is not None
    assert scripted._split_choice_table(FairSplitPartner) is not None
    assert scripted._split_choice_table(OwnTieBreak) is None
    assert scripted._split_choice_table(ParetoPartner) is None
    obs, masks = live_states(7, batch=512)
    own = OwnTieBreak().act_batch(obs, masks)
    plain = TimeDependentPartner().act_batch(obs, masks)
    assert (own != plain).any()  # its tie-break is honoured, not the table's


# ------------------------------------------------------------------------------------------------
# Whole episodes in the vector envs
# ------------------------------------------------------------------------------------------------


def play(env, steps: int, seed: int) -> list[tuple[np.ndarray, ...]]:
    learner = UniformLegal(seed=seed)
    obs, _ = env.reset(seed=seed)
    trace = []
    for _ in range(steps):
        actions = learner.act_batch(obs["observation"], obs["action_mask"])
        obs, rewards, terminated, _, infos = env.step(actions)
        trace.append((obs["observation"], obs["action_mask"], rewards, terminated, infos.get("agreement")))
    return trace


def assert_same_episodes(a, b):
    assert len(a) == len(b)
    for step_a, step_b in zip(a, b):
        for x, y in zip(step_a, step_b):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("name", DEFAULT_POOL)
def test_vector_env_episodes_equal_with_fast_and_general_partners(name):
    fast = play(NegotiationVectorEnv(256, partner=make_partner(name)), 40, seed=3)
    general = play(NegotiationVectorEnv(256, partner=reference_partner(name)), 40, seed=3)
    assert_same_episodes(fast, general)


def test_partner_pool_episodes_equal_with_fast_and_general_partners():
    fast = play(PartnerPoolVectorEnv(512, list(DEFAULT_POOL)), 40, seed=4)
    general = play(PartnerPoolVectorEnv(512, [reference_partner(n) for n in DEFAULT_POOL]), 40, seed=4)
    assert_same_episodes(fast, general)
    assert sum(int(t[3].sum()) for t in fast) > 1000  # many games finished along the way
