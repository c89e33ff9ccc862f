"""The dialogue model: training on a generated corpus, saving, and playing the text game."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from parley.agents.lm.model import is_language_model_dir, load_language_model, tokenize
from parley.agents.lm.player import LanguageModelPlayer
from parley.agents.lm.train import dialogue_tokens, read_dialogue_lines, training_splits
from parley.cli import app
from parley.envs import negotiation_text_v0 as text_env
from parley.envs.negotiation_text_v0 import parse_selection
from parley.text import make_text_player


def test_training_writes_a_loadable_model_that_learned(tiny_language_model):
    assert is_language_model_dir(tiny_language_model)
    model, vocab, meta = load_language_model(tiny_language_model)
    history = meta["training"]["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert meta["training"]["valid_views"] > 0 and "deal" in vocab.index and "hats" in vocab.index


def test_training_views_keep_both_sides_and_end_with_the_own_pick(text_games_corpus):
    train, valid, _ = training_splits(text_games_corpus)
    assert train and valid
    scenarios = {(d.context.counts, tuple(sorted(d.context.values))) for d in valid}
    assert not scenarios & {(d.context.counts, tuple(sorted(d.context.values))) for d in train}
    d = read_dialogue_lines(text_games_corpus)[0]
    tokens = dialogue_tokens(d)
    assert tokens[0] == "YOU:" and "<selection>" in tokens
    assert tokens[-3:] == [f"item{i}={k}" for i, k in enumerate(d.selection)]
    assert tokenize("I'd like 2 books.") == ["i'd", "like", "2", "books", "."]


def test_language_model_plays_the_text_env_to_the_end(tiny_language_model):
    lm = make_text_player(tiny_language_model, seed=0)
    assert isinstance(lm, LanguageModelPlayer)
    env = text_env.env()
    for seed in range(3):
        env.reset(seed=seed)
        players = [lm, make_text_player("conceder", seed=seed)]
        for agent in env.agent_iter():
            obs, _, terminated, truncated, info = env.last()
            env.step(None if terminated or truncated else players[int(agent[-1])].reply(obs))
        assert info["bad_input"] is None  # every reply was a valid utterance or selection
        assert info["messages"] >= 1 and 0.0 <= info["parse_failure_rate"] <= 1.0
        state = env.unwrapped.state
        assert all(s is not None for s in state.selections)


def test_language_model_selection_fits_the_counts(tiny_language_model):
    lm = make_text_player(tiny_language_model, seed=1)
    obs = "<input> 1 4 4 1 1 2 </input> <dialogue> THEM: i want the hats <eos> YOU: <selection> <eos> </dialogue>"
    assert parse_selection(lm.reply(obs), (1, 4, 1)) is not None


def test_train_lm_command_trains_and_reports(text_games_corpus, tmp_path):
    out = tmp_path / "lm"
    result = CliRunner().invoke(app, ["train-lm", "--corpus", str(text_games_corpus), "--out", str(out),
                                      "--epochs", "1", "--hidden", "16", "--embed", "8"])
    assert result.exit_code == 0, result.output
    assert "validation perplexity" in result.output
    assert json.loads((out / "lm.json").read_text())["config"]["hidden_dim"] == 16


def test_train_lm_command_rejects_a_missing_corpus(tmp_path):
    result = CliRunner().invoke(app, ["train-lm", "--corpus", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "no corpus" in result.output


@pytest.mark.parametrize("temperature", [0, -1])
def test_player_rejects_a_bad_temperature(tiny_language_model, temperature):
    model, vocab, _ = load_language_model(tiny_language_model)
    with pytest.raises(ValueError, match="temperature"):
        LanguageModelPlayer(model, vocab, temperature=temperature)


def test_language_model_selects_the_deal_the_talk_reached(tiny_language_model):
    model, vocab, _ = load_language_model(tiny_language_model)
    lm = LanguageModelPlayer(model, vocab, seed=0)
    talk = ("THEM: i want the hats , you can have the rest <eos> YOU: i need the ball too <eos> "
            "THEM: i need both hats and 1 book , you get the ball and the other book <eos> YOU: deal <eos> "
            "THEM: <selection> <eos>")
    mine = lm.reply(f"<input> 2 1 2 2 1 4 </input> <dialogue> {talk} </dialogue>")
    assert parse_selection(mine, (2, 2, 1)) == (1, 0, 1)  # the counter-offer that was accepted
    theirs_view = talk.replace("THEM:", "@").replace("YOU:", "THEM:").replace("@", "YOU:")
    theirs = lm.reply(f"<input> 2 3 2 2 1 0 </input> <dialogue> {theirs_view} </dialogue>")
    assert parse_selection(theirs, (2, 2, 1)) == (1, 2, 0)  # the other side reads the same deal


def test_language_model_without_a_read_deal_selects_with_the_model(tiny_language_model):
    model, vocab, _ = load_language_model(tiny_language_model)
    obs = ("<input> 2 1 2 2 1 4 </input> <dialogue> THEM: hello <eos> YOU: what do you want ? <eos> "
           "THEM: <selection> <eos> </dialogue>")
    picks = {LanguageModelPlayer(model, vocab, seed=s, read_deal=r).reply(obs) for s in range(2) for r in (True, False)}
    assert len(picks) == 1  # no deal to read: both modes make the model's own (greedy) pick
    assert parse_selection(picks.pop(), (2, 2, 1)) is not None


def test_language_model_and_a_partner_agree_whenever_the_talk_reads_as_a_deal(tiny_language_model):
    from parley.envs.negotiation import sample_context
    from parley.envs.negotiation_text_v0 import TextNegotiationState, parse_observation
    from parley.envs.realiser import replay_dialogue

    players = [make_text_player(tiny_language_model, seed=0), make_text_player("conceder", seed=1)]
    rng = np.random.default_rng(0)
    read = 0
    for _ in range(20):
        state = TextNegotiationState(sample_context(rng), max_messages=8)
        while not state.terminal:
            state.send(players[state.current_player].reply(state.observation(state.current_player)))
        if replay_dialogue(parse_observation(state.observation(0))).agreed_split is not None:
            read += 1
            assert state.metrics()["agreement"]
    assert read > 0
