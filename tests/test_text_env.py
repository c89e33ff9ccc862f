"""The text negotiation env, the realiser and the text player wrapper."""

from __future__ import annotations

import ast
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from pettingzoo.test import api_test

import parley  # noqa: F401 -- registers the ids
from parley.agents.partners.scripted import list_partners, make_partner
from parley.envs import negotiation_text_v0 as text_env
from parley.envs.corpus import parse_utterance
from parley.envs.negotiation import NUM_ACTIONS, Context, decode_act, sample_context
from parley.envs.negotiation_text_v0 import (
    NO_AGREEMENT,
    SELECTION_TOKEN,
    TextInputError,
    TextNegotiationState,
    format_observation,
    parse_observation,
    parse_selection,
)
from parley.envs.realiser import ActTextPlayer, read_deal, realise, replay_dialogue
from parley.text import make_text_player

CTX = Context((1, 4, 1), ((4, 1, 2), (0, 2, 2)))


def play(env, players):
    for agent in env.agent_iter():
        obs, _, terminated, truncated, info = env.last()
        env.step(None if terminated or truncated else players[int(agent[-1])].reply(obs))
    return info


def test_every_act_realised_with_many_seeds_parses_back_to_itself():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(40):
        counts = sample_context(rng).counts
        for action in range(NUM_ACTIONS):
            kind, split = decode_act(action)
            if split is not None and any(k > c for k, c in zip(split, counts)):
                continue
            for _ in range(5):
                text = realise(action, counts, rng)
                parsed = parse_utterance(text, counts)
                assert parsed is not None and parsed.action() == action, (text, counts, kind, split)
                checked += 1
    assert checked > 5000


def test_realiser_varies_its_sentences_and_is_seeded():
    first = [realise(51, (3, 2, 1), np.random.default_rng(s)) for s in range(30)]
    again = [realise(51, (3, 2, 1), np.random.default_rng(s)) for s in range(30)]
    assert first == again
    assert len(set(first)) > 5


def test_pettingzoo_api_test_passes():
    api_test(text_env.env(bad_input="penalize", max_messages=6), num_cycles=200)


def test_scripted_partners_play_to_complementary_selections():
    env = text_env.env(render_mode="ansi")
    agreed = 0
    for seed in range(20):
        env.reset(seed=seed)
        info = play(env, [make_text_player("linear", seed=seed), make_text_player("pareto", seed=seed + 1)])
        assert info["parse_failure_rate"] == 0.0  # realised sentences always parse
        if info["agreement"]:
            agreed += 1
            a, b = info["selections"]
            assert tuple(x + y for x, y in zip(a, b)) == env.unwrapped.state.ctx.counts
            assert info["deal"] == a
    assert agreed >= 15
    assert "selects" in env.render()


def test_selection_rules_and_outcome():
    state = TextNegotiationState(CTX, first_player=0)
    state.send("I'd like the book and you can have the rest.")
    state.send("Deal.")
    state.send(SELECTION_TOKEN)
    assert state.selecting and state.current_player == 1
    assert "<selection>" in state.observation(1)
    state.send("book=0 hat=4 ball=1")
    assert "hat=4" not in state.observation(0)  # selections are secret
    state.send("item0=1 item1=0 item2=0")
    m = state.metrics()
    assert state.terminal and m["agreement"] and m["deal"] == (1, 0, 0) and m["scores"] == (4.0, 10.0)
    assert m["pareto_optimal"] and m["parse_failure_rate"] == 0.0 and m["messages"] == 2
    assert state.returns() == (4.0, 10.0)


def test_non_complementary_selections_are_no_deal():
    state = TextNegotiationState(CTX, first_player=1)
    for text in ("hello there", SELECTION_TOKEN, "book=1 hat=4 ball=1", NO_AGREEMENT):
        state.send(text)
    m = state.metrics()
    assert not m["agreement"] and m["scores"] == (0.0, 0.0)
    assert m["parse_failure_rate"] == 1.0 and m["selections"] == (None, (1, 4, 1))


def test_message_limit_ends_the_talk():
    state = TextNegotiationState(CTX, first_player=0, max_messages=3)
    for text in ("a", "b", "c"):
        state.send(text)
    assert state.selecting and state.messages[-1] == (1, SELECTION_TOKEN) and state.current_player == 0
    assert parse_observation(state.observation(0)).selecting


def test_bad_input_raises_with_what_is_allowed_or_penalizes():
    state = TextNegotiationState(CTX, first_player=0, max_utterance_chars=20)
    with pytest.raises(TextInputError, match="at most 20 characters"):
        state.send("x" * 21)
    with pytest.raises(TextInputError, match="must say something"):
        state.send("  <> ")
    state.send(SELECTION_TOKEN)
    with pytest.raises(TextInputError, match="does not fit the items"):
        state.send("book=2 hat=0 ball=0")
    with pytest.raises(TextInputError, match="cannot read the selection"):
        state.send("I'll take the book")
    assert state.selections == [None, None]
    env = text_env.env(bad_input="penalize")
    env.reset(seed=0, options={"context": CTX, "first_player": 0})
    env.step("x" * 1000)
    _, reward, terminated, _, info = env.last()
    assert terminated and info["bad_input"] == "agent_0" and env.rewards["agent_0"] == -1.0


def test_utterances_are_normalised_so_no_one_forges_tags():
    state = TextNegotiationState(CTX, first_player=0)
    state.send("I’d like   the <selection> book <eos>")
    assert state.messages == [(0, "I'd like the selection book eos")]
    assert not state.selecting


def test_observation_round_trips():
    text = format_observation((1, 4, 1), (4, 1, 2), [(1, "hi"), (0, "i want the book ."), (1, SELECTION_TOKEN)])
    assert text == ("<input> 1 4 4 1 1 2 </input> <dialogue> THEM: hi <eos> YOU: i want the book . <eos> "
                    "THEM: <selection> <eos> </dialogue>")
    view = parse_observation(text)
    assert view.counts == (1, 4, 1) and view.values == (4, 1, 2) and view.selecting
    assert view.messages[1] == (0, "i want the book .")
    with pytest.raises(TextInputError):
        parse_observation("hello")
    assert parse_selection("Books: 1, hats: 0, balls: 2", (1, 1, 2)) == (1, 0, 2)


def test_act_text_player_reads_unparsed_text_as_a_passed_turn():
    player = ActTextPlayer(make_partner("boulware"), seed=0)
    obs = format_observation(CTX.counts, CTX.values[0], [(1, "hello, how are you?"), (1, "what do you need?")])
    reply = player.reply(obs)
    assert parse_utterance(reply, CTX.counts) is not None
    # after a deal the player ends the talk, then selects the agreed split
    obs = format_observation(CTX.counts, CTX.values[0], [(0, "I'd like the book and you can have the rest."),
                                                         (1, "Deal.")])
    assert player.reply(obs) == SELECTION_TOKEN
    obs = format_observation(CTX.counts, CTX.values[0], [(0, "I'd like the book and you can have the rest."),
                                                         (1, "Deal."), (0, SELECTION_TOKEN)])
    assert parse_selection(player.reply(obs), CTX.counts) == (1, 0, 0)


def test_replay_dialogue_reads_the_accepted_offer_from_both_sides():
    talk = [(1, "i want the hats, you can have the rest"), (0, "hello?"), (0, "i need the ball and 2 hats"),
            (1, "ok deal"), (1, SELECTION_TOKEN)]
    mine = replay_dialogue(parse_observation(format_observation(CTX.counts, CTX.values[0], talk)))
    assert mine.agreed_split == (0, 2, 1)  # the counter-offer, not the first offer; "hello?" passes
    flipped = [(1 - speaker, text) for speaker, text in talk]
    theirs = replay_dialogue(parse_observation(format_observation(CTX.counts, CTX.values[1], flipped)))
    assert theirs.agreed_split == (1, 2, 0)
    # no deal without an agreement, and talk longer than the coarse turn limit is still read to its end
    assert replay_dialogue(parse_observation(format_observation(CTX.counts, CTX.values[0], talk[:3]))).agreed_split \
        is None
    long_talk = [(i % 2, "i want the hats, you can have the rest") for i in range(12)] + [(0, "deal")]
    view = parse_observation(format_observation(CTX.counts, CTX.values[0], long_talk))
    assert replay_dialogue(view).agreed_split == (1, 0, 1)
    assert replay_dialogue(view, max_turns=10).agreed_split is None


def test_read_deal_takes_ending_the_talk_on_the_other_sides_offer_as_accepting_it():
    def deal(values, talk):
        return read_deal(parse_observation(format_observation(CTX.counts, values, talk)))

    offer = [(1, "i want the hats, you can have the rest")]
    assert deal(CTX.values[0], offer + [(0, SELECTION_TOKEN)]) == (1, 0, 1)  # I ended on their offer
    assert deal(CTX.values[1], [(0, offer[0][1]), (1, SELECTION_TOKEN)]) == (0, 4, 0)  # they ended on mine
    assert deal(CTX.values[0], offer + [(1, SELECTION_TOKEN)]) is None  # they ended on their own offer
    assert deal(CTX.values[0], offer + [(0, "no deal"), (1, SELECTION_TOKEN)]) is None  # walked away
    assert deal(CTX.values[0], offer + [(0, "deal"), (1, "hello"), (1, SELECTION_TOKEN)]) == (1, 0, 1)


def test_text_players_by_name_are_reproducible_with_a_seed():
    def transcript(seed):
        players = [make_text_player("random", seed=seed), make_text_player("random", seed=seed + 1)]
        state = TextNegotiationState(CTX)
        while not state.terminal:
            state.send(players[state.current_player].reply(state.observation(state.current_player)))
        return state.messages, state.selections

    assert transcript(3) == transcript(3)
    assert len({str(transcript(seed)) for seed in range(6)}) > 1


def test_act_text_player_replays_only_new_messages_to_the_same_state():
    reused = ActTextPlayer(make_partner("conceder"), seed=0)
    rng = np.random.default_rng(3)
    for game in range(6):  # several games in a row, the same context twice: the replay must start over
        ctx = CTX if game in (2, 3) else sample_context(rng)
        state = TextNegotiationState(ctx, first_player=game % 2)
        players = [reused, make_text_player("boulware", seed=game)]
        while not state.terminal:
            obs = state.observation(state.current_player)
            if state.current_player == 0:
                mine, _ = reused.state_of(obs)
                fresh, _ = ActTextPlayer(make_partner("conceder")).state_of(obs)
                assert (mine.history, mine.agreed_split, mine.standing_offer, mine.terminal) == \
                    (fresh.history, fresh.agreed_split, fresh.standing_offer, fresh.terminal)
            state.send(players[state.current_player].reply(obs))


@pytest.mark.parametrize("partner", ["boulware", "random"])
def test_gymnasium_id_plays_a_learner_against_a_named_partner(partner):
    env = gymnasium.make("parley/NegotiationText-v0", partner=partner, partner_seed=0)
    learner = make_text_player("conceder", seed=1)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    for _ in range(50):
        obs, reward, terminated, truncated, info = env.step(learner.reply(obs))
        if terminated:
            break
    assert terminated and not truncated
    assert info["partner"] == partner and reward == info["score"]
    assert set(info) >= {"agreement", "pareto_optimal", "parse_failure_rate", "partner_score", "learner_side"}


def test_unknown_partner_name_says_what_is_allowed():
    with pytest.raises(ValueError, match="scripted partner"):
        make_text_player("no-such-partner")
    assert set(list_partners()) >= {"boulware", "pareto"}


def test_text_env_modules_import_nothing_from_agents():
    envs_dir = Path(text_env.__file__).parent
    for name in ("negotiation_text_v0.py", "realiser.py"):
        tree = ast.parse((envs_dir / name).read_text())
        imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in imported if m.startswith(("parley.agents", "torch"))], (name, imported)
