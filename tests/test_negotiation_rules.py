"""The negotiation rules: contexts, acts, legality, scalar vs batched play, outcome metrics."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parley.envs import negotiation as rules
from parley.envs.contexts import load_contexts
from parley.envs.negotiation import (
    AGREE_ACTION,
    ALL_SPLITS,
    NUM_ACTIONS,
    WALK_AWAY_ACTION,
    BatchedNegotiation,
    Context,
    IllegalActionError,
    InvalidContextError,
    NegotiationState,
    ObservationLayout,
    context_ids,
    contexts_to_arrays,
    decode_act,
    encode_act,
    legal_action_mask,
    outcome_metrics,
    outcome_metrics_batch,
    pareto_optimal_batch,
    sample_context,
    sample_context_arrays,
    verbalize_act,
)

CTX = Context(counts=(3, 1, 2), values=((1, 3, 2), (2, 0, 2)))


# --------------------------------------------------------------------------------------------------
# Brute-force references, written independently of the rules module
# --------------------------------------------------------------------------------------------------


def all_valid_contexts() -> set[tuple]:
    """Every valid context by direct enumeration of the rules in the issue."""
    found = set()
    for counts in itertools.product(range(1, 5), repeat=3):
        if not 5 <= sum(counts) <= 7:
            continue
        vals = [v for v in itertools.product(range(11), repeat=3) if sum(c * x for c, x in zip(counts, v)) == 10]
        for a in vals:
            for b in vals:
                if any(a[i] == 0 and b[i] == 0 for i in range(3)):
                    continue
                if not any(a[i] > 0 and b[i] > 0 for i in range(3)):
                    continue
                found.add((counts, a, b))
    return found


def brute_force_outcome(ctx: Context, split):
    """(pareto_optimal, pareto_distance, max_nash) by enumerating every split with plain Python."""
    def scores(keep):
        give = [c - k for c, k in zip(ctx.counts, keep)]
        return (sum(v * k for v, k in zip(ctx.values[0], keep)), sum(v * g for v, g in zip(ctx.values[1], give)))

    splits = list(itertools.product(*(range(c + 1) for c in ctx.counts)))
    points = [scores(s) for s in splits]

    def dominated(p):
        return any(q[0] >= p[0] and q[1] >= p[1] and (q[0] > p[0] or q[1] > p[1]) for q in points)

    frontier = [p for p in points if not dominated(p)]
    point = scores(split) if split is not None else (0, 0)
    pareto = split is not None and not dominated(point)
    distance = min(math.dist(point, q) for q in frontier)
    max_nash = max(p[0] * p[1] for p in points)
    return pareto, distance, max_nash


def reference_observation(state: NegotiationState, player: int) -> np.ndarray:
    """The observation vector rebuilt from the act history, following the documented layout."""
    ctx, turns = state.ctx, state.max_turns
    obs = np.zeros(16 + 2 * turns, dtype=np.float32)
    obs[0:3] = ctx.counts
    obs[3:6] = ctx.values[player]
    standing, own = None, None
    for i, (speaker, action) in enumerate(state.history):
        obs[16 + i] = action + 1
        obs[16 + turns + i] = 1 if speaker == player else 2
        if action < AGREE_ACTION:
            k = action % 125
            split = (k // 25, (k // 5) % 5, k % 5)
            standing = (speaker, split)
            if speaker == player:
                own = split
    if standing is not None and standing[0] != player:
        obs[6] = 1
        obs[7:10] = [c - k for c, k in zip(ctx.counts, standing[1])]
    if own is not None:
        obs[10] = 1
        obs[11:14] = own
    obs[14] = len(state.history) / turns
    obs[15] = float(state.first_player == player)
    return obs


def legal_by_hand(ctx: Context, partner_offer: bool, done: bool, action: int) -> bool:
    if done:
        return False
    if action == AGREE_ACTION:
        return partner_offer
    if action == WALK_AWAY_ACTION:
        return True
    k = action % 125
    split = (k // 25, (k // 5) % 5, k % 5)
    return all(s <= c for s, c in zip(split, ctx.counts))


# --------------------------------------------------------------------------------------------------
# Contexts
# --------------------------------------------------------------------------------------------------


def test_context_validation_gives_reasons():
    with pytest.raises(InvalidContextError, match="total 5-7"):
        Context((1, 1, 1), ((4, 3, 3), (3, 3, 4)))
    with pytest.raises(InvalidContextError, match="worth 10"):
        Context((3, 1, 2), ((1, 3, 3), (2, 0, 2)))
    with pytest.raises(InvalidContextError, match="at least one agent"):
        Context((2, 2, 2), ((0, 3, 2), (0, 1, 4)))
    with pytest.raises(InvalidContextError, match="both agents"):
        Context((2, 2, 1), ((5, 0, 0), (0, 4, 2)))
    assert CTX.swapped() == Context((3, 1, 2), ((2, 0, 2), (1, 3, 2)))


def test_sample_context_support_is_every_valid_context_and_seeded():
    rng = np.random.default_rng(0)
    drawn = [sample_context(rng) for _ in range(3000)]
    valid = all_valid_contexts()
    assert all((c.counts, c.values[0], c.values[1]) in valid for c in drawn)
    assert len({(c.counts, c.values) for c in drawn}) > 1000  # spread over the support
    again = [sample_context(np.random.default_rng(0)) for _ in range(1)]
    assert again[0] == drawn[0]
    assert [sample_context(np.random.default_rng(7)) for _ in range(3)] == \
           [sample_context(np.random.default_rng(7)) for _ in range(3)]


def test_sample_context_arrays_valid_seeded_and_counts_uniform():
    counts, values = sample_context_arrays(np.random.default_rng(3), 20000)
    valid = all_valid_contexts()
    keys = {(tuple(c), tuple(v[0]), tuple(v[1])) for c, v in zip(counts.tolist(), values.tolist())}
    assert keys <= valid
    c2, v2 = sample_context_arrays(np.random.default_rng(3), 20000)
    assert np.array_equal(counts, c2) and np.array_equal(values, v2)
    # The count vector is uniform over the 28 allowed vectors (documented distribution).
    _, freq = np.unique(counts, axis=0, return_counts=True)
    assert len(freq) == 28
    assert freq.min() > 0.7 * 20000 / 28 and freq.max() < 1.3 * 20000 / 28


# --------------------------------------------------------------------------------------------------
# Acts
# --------------------------------------------------------------------------------------------------


def test_encode_decode_round_trip_and_layout():
    assert encode_act("propose", (2, 0, 1)) == 2 * 25 + 1
    assert encode_act("insist", (0, 0, 0)) == 125
    assert encode_act("agree") == 250 and encode_act("walk_away") == 251
    for i in range(NUM_ACTIONS):
        kind, split = decode_act(i)
        assert encode_act(kind, split) == i
    with pytest.raises(ValueError, match="kinds are"):
        encode_act("haggle", (1, 1, 1))
    with pytest.raises(ValueError, match="0..251"):
        decode_act(252)
    with pytest.raises(ValueError, match="needs a split"):
        encode_act("propose")


def test_verbalize_act():
    assert verbalize_act(encode_act("propose", (2, 0, 1)), (3, 1, 2)) == "I'd like 2 books and a ball; you take the rest."
    assert verbalize_act(encode_act("propose", (2, 1, 0)), (3, 1, 2)) == "I'd like 2 books and the hat; you take the rest."
    assert verbalize_act(encode_act("insist", (3, 1, 2)), (3, 1, 2)).startswith("I'd like everything")
    assert "final offer" in verbalize_act(encode_act("insist", (1, 0, 0)), (3, 1, 2))
    assert verbalize_act(AGREE_ACTION, (3, 1, 2)) == "Deal."


def test_illegal_actions_raise_with_act_and_legal_ones_and_leave_state_unchanged():
    state = NegotiationState(CTX, first_player=0)
    with pytest.raises(IllegalActionError, match=r"agree \(action 250\).*legal: propose/insist") as err:
        state.apply_action(AGREE_ACTION)
    assert isinstance(err.value, ValueError)
    assert "walk_away (251)" in str(err.value) and "agree (250)" not in str(err.value).split("legal:")[1]
    with pytest.raises(IllegalActionError, match=r"propose \(4, 0, 0\)"):
        state.apply_action(encode_act("propose", (4, 0, 0)))
    with pytest.raises(IllegalActionError, match="indices are 0..251"):
        state.apply_action(300)
    assert state.turn == 0 and state.current_player == 0
    state.apply_action(encode_act("propose", (3, 0, 0)))
    state.apply_action(AGREE_ACTION)
    assert state.is_terminal()
    with pytest.raises(IllegalActionError, match="game is over"):
        state.apply_action(WALK_AWAY_ACTION)
    assert state.agreed_split == (3, 0, 0) and state.returns() == (3.0, 4.0)


def test_agree_gives_the_proposer_what_it_kept():
    state = NegotiationState(CTX, first_player=1)
    state.apply_action(encode_act("insist", (1, 0, 2)))  # agent 1 keeps a book and both balls
    state.apply_action(AGREE_ACTION)
    assert state.agreed_split == (2, 1, 0)
    assert state.returns() == (1 * 2 + 3 * 1, 2 * 1 + 2 * 2)


def test_max_turns_and_walk_away_end_without_deal():
    state = NegotiationState(CTX, max_turns=2, no_deal_reward=-0.5)
    state.apply_action(encode_act("propose", (3, 0, 0)))
    state.apply_action(encode_act("propose", (0, 1, 2)))
    assert state.is_terminal() and state.agreed_split is None and state.returns() == (-0.5, -0.5)
    state = NegotiationState(CTX)
    state.apply_action(WALK_AWAY_ACTION)
    assert state.is_terminal() and state.walked_away_by == 0 and "walked away" in state.transcript()


# --------------------------------------------------------------------------------------------------
# Random games: properties, masks vs legality, scalar vs batched
# --------------------------------------------------------------------------------------------------


def play_random(ctx: Context, rng: np.random.Generator, max_turns: int, first: int) -> NegotiationState:
    state = NegotiationState(ctx, max_turns=max_turns, first_player=first)
    while not state.is_terminal():
        state.apply_action(int(rng.choice(np.flatnonzero(state.legal_action_mask()))))
    return state


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), max_turns=st.integers(1, 12), first=st.integers(0, 1))
def test_random_games_conserve_items_and_score_in_range(seed, max_turns, first):
    rng = np.random.default_rng(seed)
    ctx = sample_context(rng)
    state = play_random(ctx, rng, max_turns, first)
    assert 1 <= state.turn <= max_turns
    s0, s1 = state.returns()
    assert 0 <= s0 <= 10 and 0 <= s1 <= 10
    if state.agreed_split is not None:
        other = tuple(c - k for c, k in zip(ctx.counts, state.agreed_split))
        assert all(0 <= k <= c for k, c in zip(state.agreed_split, ctx.counts))
        assert all(0 <= k <= c for k, c in zip(other, ctx.counts))
        assert (s0, s1) == (ctx.score(0, state.agreed_split), ctx.score(1, other))
    m = state.metrics()
    assert m["scores"] == (s0, s1) and m["turns"] == state.turn


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_mask_equals_legality_by_applying_every_action(seed):
    rng = np.random.default_rng(seed)
    ctx = sample_context(rng)
    state = NegotiationState(ctx, max_turns=6, first_player=int(rng.integers(2)))
    while True:
        mask = state.legal_action_mask()
        offer = state.standing_offer is not None and state.standing_offer[0] != state.current_player
        for action in range(NUM_ACTIONS):
            assert bool(mask[action]) == legal_by_hand(ctx, offer, state.is_terminal(), action)
            trial = state.clone()
            if mask[action]:
                trial.apply_action(action)
                assert trial.turn == state.turn + 1
            else:
                with pytest.raises(IllegalActionError):
                    trial.apply_action(action)
        if state.is_terminal():
            break
        state.apply_action(int(rng.choice(np.flatnonzero(mask))))
    assert not state.legal_action_mask().any()


def test_legal_action_mask_and_its_fast_paths_match_the_rule_by_hand():
    rng = np.random.default_rng(5)
    # Counts beyond 0..4 take the direct rule instead of the table; both must follow the rule.
    counts = np.concatenate([rng.integers(0, 5, size=(400, 3)), rng.integers(0, 7, size=(100, 3))])
    offer = rng.random(500) < 0.5
    done = rng.random(500) < 0.2
    masks = legal_action_mask(counts, offer, done)
    assert np.array_equal(legal_action_mask(counts[:400], offer[:400], done[:400]), masks[:400])
    actions = rng.integers(-2, NUM_ACTIONS + 2, size=400)
    codes = rules._count_codes(counts[:400])
    taken = rules._legal_taken(codes, offer[:400], done[:400], actions)
    assert np.array_equal(rules._masks_from_codes(codes, offer[:400], done[:400]), masks[:400])
    for i in range(500):
        for a in (0, 124, 125, 249, 250, 251, int(rng.integers(NUM_ACTIONS))):
            ctx_like = Context.__new__(Context)
            object.__setattr__(ctx_like, "counts", tuple(int(c) for c in counts[i]))
            assert bool(masks[i, a]) == legal_by_hand(ctx_like, bool(offer[i]), bool(done[i]), a)
        if i < 400:
            expected = 0 <= actions[i] < NUM_ACTIONS and bool(masks[i, actions[i]])
            assert taken[i] == expected
    single = legal_action_mask(np.array([2, 0, 1]), np.array(True), np.array(False))
    assert single.shape == (NUM_ACTIONS,) and single[AGREE_ACTION] and single.sum() == 2 * 6 + 2


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), batch=st.integers(1, 48), max_turns=st.integers(1, 10))
def test_batched_equals_scalar_on_random_games(seed, batch, max_turns):
    rng = np.random.default_rng(seed)
    counts, values = sample_context_arrays(rng, batch)
    firsts = rng.integers(2, size=batch)
    game = BatchedNegotiation(batch, max_turns=max_turns, no_deal_reward=0.5)
    game.reset_games(np.arange(batch), counts, values, firsts)
    states = [NegotiationState(Context(tuple(counts[i]), tuple(map(tuple, values[i]))), max_turns=max_turns,
                               first_player=int(firsts[i]), no_deal_reward=0.5) for i in range(batch)]
    for _ in range(max_turns + 1):
        masks = game.legal_masks()
        for player in (0, 1):
            obs = game.observations(np.full(batch, player))
            for i, state in enumerate(states):
                assert np.array_equal(masks[i], state.legal_action_mask())
                assert np.array_equal(obs[i], state.observation(player))
                assert np.array_equal(obs[i], reference_observation(state, player))
        # Occasionally an illegal act: the batch must flag it and leave that game unchanged.
        actions = np.array([rng.choice(np.flatnonzero(m)) if m.any() else 0 for m in masks])
        bad = rng.random(batch) < 0.1
        for i in np.flatnonzero(bad):
            illegal = np.flatnonzero(masks[i] == 0)
            actions[i] = rng.choice(illegal) if masks[i].any() else actions[i]
        before = game.turn.copy()
        flagged = game.apply_actions(actions)
        for i, state in enumerate(states):
            if state.is_terminal():
                assert not flagged[i]
                continue
            if masks[i, actions[i]]:
                state.apply_action(int(actions[i]))
                assert not flagged[i]
            else:
                assert flagged[i] and game.turn[i] == before[i]
        assert np.array_equal(game.done, [s.is_terminal() for s in states])
        assert np.array_equal(game.returns(), [s.returns() for s in states])
    batch_m = game.metrics()
    for i, state in enumerate(states):
        m = state.metrics()
        assert tuple(batch_m["scores"][i]) == m["scores"]
        assert batch_m["pareto_optimal"][i] == m["pareto_optimal"]
        assert batch_m["turns"][i] == m["turns"]
        for key in ("joint", "pareto_distance", "nash_product", "max_nash_product"):
            assert batch_m[key][i] == pytest.approx(m[key])
    assert np.array_equal(pareto_optimal_batch(game.counts, game.values, game.agreed_split, game.agreed),
                          batch_m["pareto_optimal"])
    ids = context_ids(game.counts, game.values)
    assert (ids >= 0).all()
    assert np.array_equal(pareto_optimal_batch(game.counts, game.values, game.agreed_split, game.agreed, ids=ids),
                          batch_m["pareto_optimal"])


def test_batched_observation_subsets_match_full():
    rng = np.random.default_rng(1)
    game = BatchedNegotiation(32)
    counts, values = sample_context_arrays(rng, 32)
    game.reset_games(np.arange(32), counts, values, rng.integers(2, size=32))
    for _ in range(3):
        masks = game.legal_masks()
        game.apply_actions(np.array([rng.choice(np.flatnonzero(m)) if m.any() else 0 for m in masks]))
    rows = np.array([3, 0, 17, 31])
    players = rng.integers(2, size=32)
    assert np.array_equal(game.observations(players[rows], rows), game.observations(players)[rows])
    assert np.array_equal(game.legal_masks(rows), game.legal_masks()[rows])


def test_apply_actions_active_subset():
    game = BatchedNegotiation(2)
    counts, values = contexts_to_arrays([CTX, CTX])
    game.reset_games(np.arange(2), counts, values, np.array([0, 0]))
    game.apply_actions(np.array([WALK_AWAY_ACTION, WALK_AWAY_ACTION]), active=np.array([True, False]))
    assert game.done.tolist() == [True, False] and game.turn.tolist() == [1, 0]


# --------------------------------------------------------------------------------------------------
# Outcome metrics vs brute force
# --------------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), deal=st.booleans())
def test_pareto_flag_distance_and_nash_match_brute_force(seed, deal):
    rng = np.random.default_rng(seed)
    ctx = sample_context(rng)
    split = tuple(int(rng.integers(c + 1)) for c in ctx.counts) if deal else None
    pareto, distance, max_nash = brute_force_outcome(ctx, split)
    m = outcome_metrics(ctx, split)
    assert m["pareto_optimal"] == pareto
    assert m["pareto_distance"] == pytest.approx(distance)
    assert m["max_nash_product"] == pytest.approx(max_nash)
    assert m["agreement"] == deal
    counts, values = contexts_to_arrays([ctx])
    mb = outcome_metrics_batch(counts, values, np.array([split or (0, 0, 0)]), np.array([deal]))
    assert bool(mb["pareto_optimal"][0]) == pareto
    assert mb["pareto_distance"][0] == pytest.approx(distance)


def test_pareto_on_known_example():
    # Agent 1 does not value the hat; giving it the hat and keeping the books cannot be Pareto-optimal.
    assert not outcome_metrics(CTX, (3, 0, 2))["pareto_optimal"]
    assert outcome_metrics(CTX, (0, 1, 0))["pareto_optimal"]  # 3 for agent 0, 10 for agent 1
    m = outcome_metrics(CTX, None, no_deal_reward=1.0)
    assert m["scores"] == (1.0, 1.0) and not m["pareto_optimal"] and m["nash_product"] == 0.0
    with pytest.raises(ValueError, match="0..count"):
        outcome_metrics(CTX, (4, 0, 0))


# --------------------------------------------------------------------------------------------------
# load_contexts
# --------------------------------------------------------------------------------------------------


def write_formats(tmp_path, contexts: list[Context]) -> dict[str, object]:
    def cnt_val(counts, vals):
        return " ".join(f"{c} {v}" for c, v in zip(counts, vals))

    selfplay = tmp_path / "selfplay.txt"
    selfplay.write_text("".join(f"{cnt_val(c.counts, c.values[0])}\n{cnt_val(c.counts, c.values[1])}\n"
                                for c in contexts))
    raw = tmp_path / "data.txt"
    raw.write_text("".join(f"{cnt_val(c.counts, c.values[0])} YOU: hi <eos> THEM: <selection> item0=1 "
                           f"item1=0 item2=1 <eos> reward=5 agree {cnt_val(c.counts, c.values[1])}\n"
                           for c in contexts))
    tagged = tmp_path / "val.txt"
    tagged.write_text("".join(f"<input> {cnt_val(c.counts, c.values[0])} </input> <dialogue> YOU: hi <eos> "
                              f"</dialogue> <output> <disagree> </output> <partner_input> "
                              f"{cnt_val(c.counts, c.values[1])} </partner_input>\n" for c in contexts))
    openspiel = tmp_path / "instances.txt"
    openspiel.write_text("".join(",".join(map(str, c.counts)) + " " + ",".join(map(str, c.values[0])) + " "
                                 + ",".join(map(str, c.values[1])) + "\n" for c in contexts))
    return {"selfplay": selfplay, "raw": raw, "tagged": tagged, "openspiel": openspiel}


def test_load_contexts_every_format_round_trips(tmp_path):
    rng = np.random.default_rng(11)
    contexts = [sample_context(rng) for _ in range(25)]
    for name, path in write_formats(tmp_path, contexts).items():
        assert load_contexts(path) == contexts, name


def test_load_contexts_invalid_lines_name_file_and_line(tmp_path):
    contexts = [CTX, CTX.swapped()]
    files = write_formats(tmp_path, contexts)
    for path in files.values():
        lines = path.read_text().splitlines()
        lines[1] = lines[1].replace("3", "4", 1)  # breaks the counts or the value total on line 2
        path.write_text("\n".join(lines) + "\n")
        with pytest.raises(InvalidContextError) as err:
            load_contexts(path)
        assert str(path) in str(err.value)
        assert "line 1" in str(err.value) or "line 2" in str(err.value)
    bad = tmp_path / "garbage.txt"
    bad.write_text("hello world\n")
    with pytest.raises(InvalidContextError, match="garbage.txt, line 1: unrecognised"):
        load_contexts(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(InvalidContextError, match="no contexts"):
        load_contexts(empty)
    with pytest.raises(FileNotFoundError):
        load_contexts(tmp_path / "missing.txt")
    words = tmp_path / "words.txt"
    words.write_text("1,2,3 8,1,0 4,0,2\n1,x,1 1,1,1 1,1,1\n")
    with pytest.raises(InvalidContextError, match="words.txt, line 2: expected integers"):
        load_contexts(words)


def test_load_contexts_on_corpus(corpus_dir, tmp_path):
    if corpus_dir is None:
        # No corpus on this machine: generated files in the corpus formats stand in.
        files = write_formats(tmp_path, [sample_context(np.random.default_rng(i)) for i in range(40)])
        assert len(load_contexts(files["raw"])) == 40
        assert len(load_contexts(files["tagged"])) == 40
        return
    selfplay = load_contexts(corpus_dir / "selfplay.txt")
    assert len(selfplay) > 1000
    val = load_contexts(corpus_dir / "val.txt")
    assert len(val) > 500
    data = load_contexts(corpus_dir / "data.txt")
    assert len(data) > 5000
    # Each dialogue appears once from each side: swapped contexts appear too.
    val_set = set(val)
    assert sum(c.swapped() in val_set for c in val) > 0.9 * len(val)
    openspiel = corpus_dir.parent / "openspiel" / "bargaining_instances1000.txt"
    if openspiel.is_file():
        with pytest.raises(InvalidContextError, match="line"):
            load_contexts(openspiel)  # OpenSpiel's pool allows counts the Deal-or-No-Deal rules do not
        kept = load_contexts(openspiel, skip_invalid=True)
        assert 0 < len(kept) < 1000


def test_observation_layout_sizes():
    lay = ObservationLayout(10)
    assert lay.size == 36 and ObservationLayout.from_size(36) == lay
    with pytest.raises(ValueError, match="not a negotiation observation size"):
        ObservationLayout.from_size(17)


def brute_force_frontier(all_s0: np.ndarray, all_s1: np.ndarray, feasible: np.ndarray) -> np.ndarray:
    """(B, 125) bool: feasible splits that no feasible split dominates, by comparing every pair."""
    dominates = ((all_s0[:, None, :] >= all_s0[:, :, None]) & (all_s1[:, None, :] >= all_s1[:, :, None])
                 & ((all_s0[:, None, :] > all_s0[:, :, None]) | (all_s1[:, None, :] > all_s1[:, :, None]))
                 & feasible[:, None, :])
    return feasible & ~np.any(dominates, axis=2)


def split_scores(counts: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both sides' scores of every split (B, 125) and which splits fit the counts, in plain numpy."""
    feasible = np.all(ALL_SPLITS[None] <= counts[:, None, :], axis=-1)
    s0 = (ALL_SPLITS[None] * values[:, None, 0]).sum(-1).astype(float)
    s1 = ((counts[:, None, :] - ALL_SPLITS[None]) * values[:, None, 1]).sum(-1).astype(float)
    return s0, s1, feasible


def test_pareto_frontier_matches_brute_force_on_every_valid_context():
    counts, values, _, _ = rules._context_table()
    frontier = rules.pareto_frontier_masks(counts, values)
    for start in range(0, len(counts), 500):
        rows = slice(start, start + 500)
        assert np.array_equal(frontier[rows], brute_force_frontier(*split_scores(counts[rows], values[rows])))
    # The scalar metrics read the same frontier.
    for i in range(0, len(counts), 97):
        ctx = Context(tuple(counts[i]), (tuple(values[i, 0]), tuple(values[i, 1])))
        on_frontier = {tuple(int(k) for k in ALL_SPLITS[j]) for j in np.flatnonzero(frontier[i])}
        assert {s for s in on_frontier if outcome_metrics(ctx, s)["pareto_optimal"]} == on_frontier


def test_pareto_frontier_matches_brute_force_off_the_valid_contexts():
    # Counts and values outside the Deal-or-No-Deal rules (zeros, ties, large values) take the uncached path.
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 5, size=(300, 3))
    values = rng.integers(0, 4, size=(300, 2, 3)) * rng.integers(1, 20, size=(300, 2, 1))
    assert (context_ids(counts, values) == -1).mean() > 0.9
    frontier = rules.pareto_frontier_masks(counts, values)
    assert np.array_equal(frontier, brute_force_frontier(*split_scores(counts, values)))
    tied = rules.pareto_frontier_masks(np.array([[2, 2, 2]]), np.array([[[1, 1, 0], [1, 1, 0]]]))
    assert tied[0].sum() == 3 * 3 * 3  # every split gives the same total: all of them are on the frontier


def test_observation_layout_fields_tile_the_vector_and_assemble_places_them():
    lay = ObservationLayout(4)
    position = 0
    columns = {}
    for name in lay.FIELD_ORDER:
        where = getattr(lay, name)
        width = 1 if isinstance(where, int) else where.stop - where.start
        assert (where if isinstance(where, int) else where.start) == position, name
        position += width
        columns[name] = np.full((2, width), position, dtype=np.float32)
    assert position == lay.size
    obs = lay.assemble(**columns)
    for name in lay.FIELD_ORDER:
        assert np.all(obs[:, getattr(lay, name)] == columns[name][0, 0]), name
    with pytest.raises(ValueError, match="missing \\['values'\\]"):
        lay.assemble(**{k: v for k, v in columns.items() if k != "values"})
