"""Scripted partners: legality, batched == scalar, seeding, and each partner's documented behaviour."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.agents.partners.scripted import (
    ObservationView,
    ParetoPartner,
    TimeDependentPartner,
    list_partners,
    make_partner,
)
from parley.envs.negotiation import (
    AGREE_ACTION,
    ALL_SPLITS,
    INSIST_OFFSET,
    NUM_SPLITS,
    WALK_AWAY_ACTION,
    BatchedNegotiation,
    Context,
    NegotiationState,
    decode_act,
    encode_act,
    outcome_metrics,
    sample_context,
    sample_context_arrays,
)
from parley.envs.policy import Policy

NAMES = list(list_partners())
DETERMINISTIC = [n for n in NAMES if n != "random"]


def random_states(seed: int, batch: int = 24, max_turns: int = 10) -> list[tuple[np.ndarray, np.ndarray]]:
    """(observations, masks) of live games at every step of games driven by a random mix of partners."""
    rng = np.random.default_rng(seed)
    drivers = [make_partner(n, seed=seed) for n in NAMES]
    game = BatchedNegotiation(batch, max_turns=max_turns)
    counts, values = sample_context_arrays(rng, batch)
    game.reset_games(np.arange(batch), counts, values, rng.integers(2, size=batch))
    states = []
    while not game.done.all():
        live = np.flatnonzero(~game.done)
        obs = game.observations(game.current_player)[live]
        masks = game.legal_masks()[live]
        states.append((obs, masks))
        choice = rng.integers(len(drivers), size=live.size)
        actions = np.full(batch, WALK_AWAY_ACTION)
        for k, driver in enumerate(drivers):
            rows = np.flatnonzero(choice == k)
            if rows.size:
                actions[live[rows]] = driver.act_batch(obs[rows], masks[rows])
        assert not game.apply_actions(actions).any()
    return states


def own_utility(obs: np.ndarray, split) -> int:
    return int(np.dot(obs[3:6], split))


def partner_insisted(obs: np.ndarray, max_turns: int = 10) -> bool:
    """Whether the partner's standing proposal was an insist, read from the history in plain Python."""
    last = None
    for token, speaker in zip(obs[16:16 + max_turns], obs[16 + max_turns:16 + 2 * max_turns], strict=True):
        if speaker == 2 and 1 <= token <= AGREE_ACTION:
            last = int(token) - 1
    return bool(obs[6]) and last is not None and last >= INSIST_OFFSET


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), max_turns=st.integers(1, 12))
def test_every_partner_always_acts_legally(seed, max_turns):
    partners = [make_partner(n, seed=seed) for n in NAMES]
    for obs, masks in random_states(seed, max_turns=max_turns):
        for partner in partners:
            actions = partner.act_batch(obs, masks)
            assert actions.shape == (obs.shape[0],)
            assert np.all(masks[np.arange(obs.shape[0]), actions] == 1), partner.name


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_act_equals_act_batch_row_by_row(seed):
    partners = [make_partner(n) for n in DETERMINISTIC]
    for obs, masks in random_states(seed)[::2]:
        for partner in partners:
            batch = partner.act_batch(obs, masks)
            single = [partner.act(o, m) for o, m in zip(obs, masks, strict=True)]
            assert list(batch) == single, partner.name
            partner.chunk_size, whole = 5, partner.chunk_size  # large batches are decided in chunks
            assert np.array_equal(partner.act_batch(obs, masks), batch), partner.name
            partner.chunk_size = whole


def test_partners_implement_the_policy_protocol_and_are_listed():
    assert set(list_partners()) == {"random", "hardliner", "fair_split", "boulware", "linear", "conceder",
                                    "tit_for_tat", "pareto"}
    for name, description in list_partners().items():
        partner = make_partner(name)
        assert isinstance(partner, Policy)
        assert partner.name == name and description


def test_unknown_partner_and_parameter_errors_name_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown partner 'nope'.*boulware.*pareto"):
        make_partner("nope")
    with pytest.raises(ValueError, match="takes no parameter 'patience'.*reservation"):
        make_partner("boulware", patience=3)
    with pytest.raises(ValueError, match="reservation"):
        make_partner("linear", reservation=11)
    with pytest.raises(ValueError, match="share"):
        make_partner("fair_split", share=1.5)


def test_random_partner_is_seeded_uniform_and_legal():
    obs, masks = random_states(3)[3]
    a = make_partner("random", seed=7).act_batch(obs, masks)
    b = make_partner("random", seed=7).act_batch(obs, masks)
    c = make_partner("random", seed=8).act_batch(obs, masks)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert make_partner("random", seed=5).act(obs[0], masks[0]) == make_partner("random", seed=5).act_batch(
        obs[:1], masks[:1])[0]

    # Many draws on one state: every legal act shows up at a roughly uniform rate, nothing else does.
    partner = make_partner("random", seed=0)
    reps = 20000
    picks = partner.act_batch(np.repeat(obs[:1], reps, 0), np.repeat(masks[:1], reps, 0))
    legal = np.flatnonzero(masks[0])
    freq = np.bincount(picks, minlength=masks.shape[1])
    assert set(np.flatnonzero(freq)) == set(legal)
    expected = reps / legal.size
    assert np.all(np.abs(freq[legal] - expected) < 5 * np.sqrt(expected))
    # A mask the rules would not make (a few acts allowed) is still followed, uniformly.
    narrow = np.zeros_like(masks[:1])
    narrow[0, [3, 130, WALK_AWAY_ACTION]] = 1
    picks = partner.act_batch(np.repeat(obs[:1], 3000, 0), np.repeat(narrow, 3000, 0))
    assert set(picks) == {3, 130, WALK_AWAY_ACTION}
    assert np.all(np.abs(np.bincount(picks)[[3, 130, WALK_AWAY_ACTION]] - 1000) < 5 * np.sqrt(1000))
    quiet = make_partner("random", seed=0, walk_away=False).act_batch(
        np.repeat(obs[:1], 2000, 0), np.repeat(masks[:1], 2000, 0))
    assert not np.any(quiet == WALK_AWAY_ACTION)


def test_time_dependent_target_curves_are_ordered():
    t = np.linspace(0, 1, 51)
    boulware, linear, conceder = (make_partner(n, reservation=3) for n in ("boulware", "linear", "conceder"))
    tb, tl, tc = (p.target_utility(t) for p in (boulware, linear, conceder))
    for curve in (tb, tl, tc):
        assert curve[0] == pytest.approx(10) and curve[-1] == pytest.approx(3)
        assert np.all(np.diff(curve) <= 1e-12)
    assert np.all(tb >= tl - 1e-12) and np.all(tl >= tc - 1e-12)
    assert np.all(tb[1:-1] > tl[1:-1]) and np.all(tl[1:-1] > tc[1:-1])
    assert np.allclose(tl, 10 - 7 * t)
    # k shifts the start: f(0) = k.
    assert TimeDependentPartner(exponent=1, reservation=0, k=0.5).target_utility(0.0) == pytest.approx(5)


def test_boulware_asks_for_at_least_what_conceder_asks_for_in_the_same_state():
    boulware, conceder = make_partner("boulware"), make_partner("conceder")
    later = 0
    for seed in range(3):
        for obs, masks in random_states(seed):
            b, c = boulware.act_batch(obs, masks), conceder.act_batch(obs, masks)
            both = (b < AGREE_ACTION) & (c < AGREE_ACTION)
            ub = (ALL_SPLITS[b[both] % NUM_SPLITS] * obs[both, 3:6]).sum(1)
            uc = (ALL_SPLITS[c[both] % NUM_SPLITS] * obs[both, 3:6]).sum(1)
            assert np.all(ub >= uc)
            later += int(np.sum(ub > uc))
            # Conceder accepts whenever boulware does.
            assert np.all(~(b == AGREE_ACTION) | (c == AGREE_ACTION))
    assert later > 0


def test_time_dependent_proposal_is_the_cheapest_split_reaching_the_target():
    partner = make_partner("linear", reservation=4)
    for obs, masks in random_states(11):
        view = ObservationView(obs)
        target = partner.target_utility(view.time)
        actions = partner.act_batch(obs, masks)
        for o, m, a, tgt in zip(obs, masks, actions, target, strict=True):
            feasible = [s for s in ALL_SPLITS if np.all(s <= o[:3])]
            reachable = sorted(own_utility(o, s) for s in feasible if own_utility(o, s) >= tgt - 1e-9)
            accept_at = min(tgt, 4) if partner_insisted(o) else tgt
            if a == AGREE_ACTION:
                assert own_utility(o, o[7:10]) >= accept_at - 1e-9
                continue
            kind, split = decode_act(a)
            assert kind == "propose" and own_utility(o, split) == reachable[0]
            # Among equally good splits it keeps the fewest items: worthless items are always given away.
            same = [s for s in feasible if own_utility(o, s) == reachable[0]]
            assert sum(split) == min(int(s.sum()) for s in same)
            if m[AGREE_ACTION]:
                assert own_utility(o, o[7:10]) < accept_at - 1e-9


@pytest.mark.parametrize("name", ["boulware", "tit_for_tat", "pareto"])
def test_an_insisted_offer_is_final_and_accepted_above_the_reservation_value(name):
    ctx = Context((3, 1, 2), ((1, 3, 2), (2, 0, 2)))
    for kind, final, accepted in [("propose", True, False), ("insist", True, True), ("insist", False, False)]:
        partner = make_partner(name, reservation=5, accept_final_offers=final)
        state = NegotiationState(ctx, first_player=1)
        state.apply_action(encode_act(kind, (3, 0, 1)))  # leaves it the hat and a ball: 5 points
        assert (partner.act(state.observation(0), state.legal_action_mask()) == AGREE_ACTION) == accepted
    # Below the reservation value an insisted offer is still refused.
    state = NegotiationState(ctx, first_player=1)
    state.apply_action(encode_act("insist", (3, 0, 2)))  # 3 points
    assert make_partner(name, reservation=5).act(state.observation(0), state.legal_action_mask()) != AGREE_ACTION


def test_hardliner_insists_on_everything_it_values_and_never_accepts_a_low_offer():
    for accept_at in (10, 7):
        partner = make_partner("hardliner", accept_at=accept_at)
        for seed in range(3):
            for obs, masks in random_states(seed):
                actions = partner.act_batch(obs, masks)
                offer_utility = (obs[:, 7:10] * obs[:, 3:6]).sum(1)
                agreed = actions == AGREE_ACTION
                assert np.all(offer_utility[agreed] >= accept_at)
                assert np.all(agreed == ((masks[:, AGREE_ACTION] == 1) & (offer_utility >= accept_at)))
                split = ALL_SPLITS[actions[~agreed] - INSIST_OFFSET]
                assert np.all(actions[~agreed] >= INSIST_OFFSET) and np.all(actions[~agreed] < AGREE_ACTION)
                expected = np.where(obs[~agreed, 3:6] > 0, obs[~agreed, 0:3], 0)
                assert np.array_equal(split, expected)


def test_fair_split_asks_for_half_with_an_even_split():
    partner = make_partner("fair_split")
    ctx = Context((2, 2, 2), ((1, 2, 2), (2, 2, 1)))
    state = NegotiationState(ctx, first_player=0)
    kind, split = decode_act(partner.act(state.observation(0), state.legal_action_mask()))
    assert kind == "propose" and split == (1, 1, 1)  # 5 points, every type split in half
    state.apply_action(encode_act("propose", (1, 1, 1)))
    state.apply_action(encode_act("propose", (2, 1, 1)))  # leaves it (0, 1, 1): 4 points
    assert partner.act(state.observation(0), state.legal_action_mask()) != AGREE_ACTION
    state.apply_action(encode_act("propose", (1, 1, 1)))
    state.apply_action(encode_act("propose", (1, 1, 1)))  # leaves it (1, 1, 1): 5 points
    assert partner.act(state.observation(0), state.legal_action_mask()) == AGREE_ACTION


def _tft_game(partner_offers: list[tuple[int, int, int]]):
    """Tit-for-tat (agent 0, values (1, 3, 2) over (3, 1, 2)) against scripted partner proposals."""
    tft = make_partner("tit_for_tat", reservation=2)
    ctx = Context((3, 1, 2), ((1, 3, 2), (2, 0, 2)))
    state = NegotiationState(ctx, first_player=0, max_turns=20)
    utilities = []
    for offer in partner_offers:
        action = tft.act(state.observation(0), state.legal_action_mask())
        kind, split = decode_act(action)
        assert kind == "propose"
        utilities.append(ctx.score(0, split))
        state.apply_action(action)
        state.apply_action(encode_act("propose", offer))  # what the partner keeps
    return utilities, tft.act(state.observation(0), state.legal_action_mask()), ctx


def test_tit_for_tat_reciprocates_concessions_and_holds_otherwise():
    # The partner keeps everything, then keeps asking the same: tit-for-tat opens at 10, answers the first
    # proposal with its opening concession (1 point) and then holds.
    utilities, _, _ = _tft_game([(3, 1, 2), (3, 1, 2), (3, 1, 2)])
    assert utilities == [10, 9, 9]
    # The partner concedes 1 point, then 2 points (in tit-for-tat's values): it mirrors both.
    utilities, last, ctx = _tft_game([(3, 1, 2), (2, 1, 2), (2, 1, 1)])
    assert utilities == [10, 9, 9 - 1]
    kind, split = decode_act(last)
    assert kind == "propose" and ctx.score(0, split) == 9 - 1 - 2
    # A partner asking for more again is not punished: the target holds.
    utilities, last, ctx = _tft_game([(3, 0, 2), (3, 1, 2)])
    assert ctx.score(0, decode_act(last)[1]) == utilities[-1]


def test_tit_for_tat_accepts_an_offer_worth_its_target():
    tft = make_partner("tit_for_tat")
    ctx = Context((3, 1, 2), ((1, 3, 2), (2, 0, 2)))
    state = NegotiationState(ctx, first_player=1)
    state.apply_action(encode_act("propose", (0, 0, 0)))  # partner offers everything: worth 10
    assert tft.act(state.observation(0), state.legal_action_mask()) == AGREE_ACTION


def _believed_pareto(obs: np.ndarray, split, expected_values: np.ndarray) -> bool:
    own = lambda s: float(np.dot(obs[3:6], s))  # noqa: E731
    theirs = lambda s: float(np.dot(expected_values, obs[0:3] - s))  # noqa: E731
    for other in ALL_SPLITS:
        if np.all(other <= obs[0:3]):
            if (own(other) >= own(split) and theirs(other) >= theirs(split) - 1e-9
                    and (own(other) > own(split) or theirs(other) > theirs(split) + 1e-9)):
                return False
    return True


def test_pareto_proposals_lie_on_the_believed_frontier():
    partner = make_partner("pareto")
    checked = 0
    for obs, masks in random_states(5)[::2]:
        expected = partner.expected_partner_values(ObservationView(obs))
        for o, e, a in zip(obs, expected, partner.act_batch(obs, masks), strict=True):
            if a < AGREE_ACTION:
                assert _believed_pareto(o, decode_act(a)[1], e)
                checked += 1
    assert checked > 20


def test_pareto_belief_follows_informative_proposals_and_then_proposals_are_pareto_optimal():
    # The partner only values books; it keeps asking for both books, which makes that belief sharp.
    ctx = Context((2, 2, 1), ((1, 3, 2), (5, 0, 0)))
    partner = ParetoPartner(rationality=5.0, reservation=2)
    state = NegotiationState(ctx, first_player=1, max_turns=20)
    proposals = 0
    while not state.is_terminal():
        state.apply_action(encode_act("propose", (2, 0, 0)))
        if state.is_terminal():
            break
        obs = state.observation(0)
        cand, weights = partner.belief(ObservationView(obs[None]))
        assert tuple(cand[0, weights[0].argmax()]) == (5, 0, 0) and weights[0].max() > 0.99
        action = partner.act(obs, state.legal_action_mask())
        if action < AGREE_ACTION:
            _, split = decode_act(action)
            assert outcome_metrics(ctx, split)["pareto_optimal"], split
            proposals += 1
        state.apply_action(action)
    assert proposals >= 2
    assert state.agreed_split == (0, 2, 1)  # it accepted the partner's offer, itself Pareto-optimal


def test_pareto_belief_only_holds_valuations_valid_for_the_context():
    partner = make_partner("pareto")
    rng = np.random.default_rng(2)
    for _ in range(20):
        ctx = sample_context(rng)
        state = NegotiationState(ctx)
        cand, weights = partner.belief(ObservationView(state.observation(0)[None]))
        support = cand[0][weights[0] > 0]
        assert np.allclose(weights[0].sum(), 1)
        assert any(tuple(v) == ctx.values[1] for v in support)
        for v in support:
            Context(ctx.counts, (ctx.values[0], tuple(int(x) for x in v)))  # raises if invalid


def test_partners_answer_an_empty_batch_and_reject_bad_shapes():
    for name in NAMES:
        partner = make_partner(name)
        empty = partner.act_batch(np.zeros((0, 36), np.float32), np.zeros((0, 252), np.int8))
        assert empty.shape == (0,)
        with pytest.raises(ValueError, match="action masks must have shape"):
            partner.act_batch(np.zeros((2, 36), np.float32), np.zeros((2, 10), np.int8))
        with pytest.raises(ValueError, match="not a negotiation observation size"):
            partner.act_batch(np.zeros((2, 35), np.float32), np.zeros((2, 252), np.int8))
