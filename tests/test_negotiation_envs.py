"""The negotiation env adapters: PettingZoo AEC and parallel, Gymnasium single-agent, vector env."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import gymnasium
import numpy as np
import pettingzoo
import pytest
from gymnasium.utils.env_checker import check_env
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test, seed_test

import parley  # noqa: F401 -- registers the ids
from parley.envs import negotiation_v0
from parley.envs.negotiation import (
    AGREE_ACTION,
    WALK_AWAY_ACTION,
    Context,
    IllegalActionError,
    NegotiationState,
    ObservationLayout,
    encode_act,
    sample_context,
)
from parley.envs.negotiation_gym import NegotiationGymEnv
from parley.envs.negotiation_vector import NegotiationVectorEnv
from parley.envs.policy import BatchPolicy

CTX = Context(counts=(3, 1, 2), values=((1, 3, 2), (2, 0, 2)))
LAYOUT = ObservationLayout(10)


class RandomLegal(BatchPolicy):
    """Uniform over the legal acts, seeded (a stand-in partner independent of the scripted suite)."""

    name = "random_legal"

    def act_batch(self, observations, action_masks):
        keys = np.where(np.asarray(action_masks) > 0, self.rng.random(np.shape(action_masks)), -1.0)
        return keys.argmax(axis=1)


class Greedy(BatchPolicy):
    """Deterministic: agrees to a standing proposal worth at least 5 to it, otherwise asks for everything."""

    name = "greedy"

    def act_batch(self, observations, action_masks):
        obs = np.asarray(observations)
        counts = obs[:, LAYOUT.counts].astype(int)
        keep_all = counts[:, 0] * 25 + counts[:, 1] * 5 + counts[:, 2]
        worth = (obs[:, LAYOUT.values] * obs[:, LAYOUT.partner_offer]).sum(axis=1)
        agree = (np.asarray(action_masks)[:, AGREE_ACTION] > 0) & (worth >= 5)
        return np.where(agree, AGREE_ACTION, keep_all)


class AlwaysIllegal(BatchPolicy):
    name = "always_illegal"

    def act_batch(self, observations, action_masks):
        return np.full(len(action_masks), encode_act("propose", (4, 4, 4)))


class WalksAway(BatchPolicy):
    name = "walks_away"

    def act_batch(self, observations, action_masks):
        return np.full(len(action_masks), WALK_AWAY_ACTION)


def pick(mask, rng):
    return int(rng.choice(np.flatnonzero(mask)))


# --------------------------------------------------------------------------------------------------
# PettingZoo
# --------------------------------------------------------------------------------------------------


def test_pettingzoo_api_tests():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        api_test(negotiation_v0.env(render_mode="ansi"), num_cycles=300)
        api_test(negotiation_v0.env(max_turns=3, illegal_action="penalize"), num_cycles=100)
        parallel_api_test(negotiation_v0.parallel_env(), num_cycles=300)
        seed_test(lambda: negotiation_v0.env(), num_cycles=100)
        # parallel_seed_test samples actions without masks: illegal ones must end the game, not raise.
        parallel_seed_test(lambda: negotiation_v0.parallel_env(illegal_action="penalize"), num_cycles=100)


def play_through_both_wrappers(env_kwargs: dict, seed: int, bad_acts: float = 0.0) -> None:
    """One random game through negotiation_v0's order-enforcing wrapper and PettingZoo's own, side by side:
    every ``last()`` and every attribute the AEC API exposes must agree."""
    ours = negotiation_v0.env(**env_kwargs)
    theirs = pettingzoo.utils.wrappers.OrderEnforcingWrapper(negotiation_v0.raw_env(**env_kwargs))
    assert type(ours) is not pettingzoo.utils.wrappers.OrderEnforcingWrapper
    assert isinstance(ours, pettingzoo.utils.wrappers.OrderEnforcingWrapper)
    ours.reset(seed=seed)
    theirs.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for agent, other_agent in zip(ours.agent_iter(), theirs.agent_iter(), strict=True):
        assert agent == other_agent == ours.agent_selection == theirs.agent_selection
        obs, reward, term, trunc, info = ours.last()
        obs2, reward2, term2, trunc2, info2 = theirs.last()
        assert np.array_equal(obs["observation"], obs2["observation"])
        assert np.array_equal(obs["action_mask"], obs2["action_mask"])
        assert (reward, term, trunc, info) == (reward2, term2, trunc2, info2)
        assert ours.rewards == theirs.rewards and ours.terminations == theirs.terminations
        assert ours.truncations == theirs.truncations and ours.infos == theirs.infos
        if term or trunc:
            action = None
        elif rng.random() < bad_acts:
            action = int(rng.choice(np.flatnonzero(obs["action_mask"] == 0)))
        else:
            action = pick(obs["action_mask"], rng)
        ours.step(action)
        theirs.step(action)
    assert ours.agents == theirs.agents == []
    assert ours._cumulative_rewards == theirs._cumulative_rewards


def test_fast_order_enforcing_wrapper_behaves_like_pettingzoos():
    # negotiation_v0.env() wraps the game in a faster subclass of PettingZoo's public OrderEnforcingWrapper
    # (benchmarks/env_throughput.py measures both); over many random games it must act exactly like it.
    for seed in range(150):
        kwargs = {"max_turns": 1 + seed % 10}
        bad = 0.0
        if seed % 3 == 0:
            kwargs["illegal_action"] = "penalize"
            bad = 0.1
        play_through_both_wrappers(kwargs, seed, bad)
    # Misuse before reset and after the end: the same kinds of errors, and the same end state.
    def misuse(env) -> list:
        seen = []
        for call in (env.last, env.agent_iter, lambda: env.step(0), lambda: env.agents):
            with pytest.raises((AttributeError, AssertionError)) as err:
                call()
            assert "reset" in str(err.value)
            seen.append(err.type)
        env.reset(seed=0)
        env.step(WALK_AWAY_ACTION)
        while env.agents:
            env.step(None)
        env.step(None)  # nobody is left: PettingZoo logs a warning instead of raising
        seen.append((env.agents, list(env.agent_iter())))
        return seen

    assert misuse(negotiation_v0.env()) == misuse(
        pettingzoo.utils.wrappers.OrderEnforcingWrapper(negotiation_v0.raw_env()))


def test_registry_ids():
    env = pettingzoo.make("aec", "parley/negotiation-v0", max_turns=4)
    env.reset(seed=0)
    assert env.unwrapped.max_turns == 4
    par = pettingzoo.make("parallel", "parley/negotiation-v0")
    obs, _ = par.reset(seed=0)
    assert set(obs) == {"agent_0", "agent_1"}


def play_aec(env, rng):
    for _ in env.agent_iter():
        obs, _, term, trunc, _ = env.last()
        env.step(None if term or trunc else pick(obs["action_mask"], rng))


def test_aec_agents_hold_context_values_and_fixed_context():
    env = negotiation_v0.env(contexts=[CTX])
    rng = np.random.default_rng(0)
    firsts = set()
    for seed in range(6):
        env.reset(seed=seed)
        firsts.add(env.agent_selection)
        for i, agent in enumerate(env.possible_agents):
            obs = env.observe(agent)["observation"]
            assert tuple(obs[LAYOUT.counts]) == CTX.counts
            assert tuple(obs[LAYOUT.values]) == CTX.values[i]
        play_aec(env, rng)
    assert firsts == {"agent_0", "agent_1"}  # the first mover is drawn per episode
    env = negotiation_v0.env(first_player=1)
    env.reset(seed=3)
    assert env.agent_selection == "agent_1"
    assert env.observe("agent_1")["observation"][LAYOUT.moved_first] == 1
    assert not env.observe("agent_0")["action_mask"].any()  # waiting agent


def test_aec_contexts_from_path_and_reset_options(tmp_path):
    path = tmp_path / "ctx.txt"
    path.write_text("1,2,3 8,1,0 4,0,2\n")
    env = negotiation_v0.env(contexts=str(path))
    env.reset(seed=0)
    assert env.unwrapped.state.ctx == Context((1, 2, 3), ((8, 1, 0), (4, 0, 2)))
    env.reset(options={"context": CTX, "first_player": 0})
    assert env.unwrapped.state.ctx == CTX and env.agent_selection == "agent_0"
    with pytest.raises(ValueError, match="first_player"):
        negotiation_v0.env(first_player=2)
    with pytest.raises(ValueError, match="illegal_action"):
        negotiation_v0.env(illegal_action="ignore")
    with pytest.raises(ValueError, match="must not be empty"):
        negotiation_v0.env(contexts=[])


def test_aec_deal_rewards_infos_and_render():
    env = negotiation_v0.env(contexts=[CTX], first_player=0, render_mode="ansi")
    env.reset(seed=0)
    env.step(encode_act("propose", (2, 1, 0)))  # agent_0 keeps 2 books and the hat
    env.step(AGREE_ACTION)
    assert env.terminations == {"agent_0": True, "agent_1": True}
    assert env.rewards == {"agent_0": 5.0, "agent_1": 6.0}
    info = env.infos["agent_0"]
    assert info["deal"] == (2, 1, 0) and info["agreement"] and info["turns"] == 2
    assert info["scores"] == (5.0, 6.0) and isinstance(info["pareto_optimal"], bool)
    text = env.render()
    assert "agent_0: I'd like 2 books and the hat; you take the rest." in text
    assert "agent_1: Deal." in text and "Deal: agent_0 gets 2 books and the hat (5 points)" in text
    _, reward, term, _, _ = env.last()
    assert term and reward == 5.0


def test_aec_render_human_prints(capsys):
    env = negotiation_v0.env(contexts=[CTX], first_player=0, render_mode="human")
    env.reset(seed=0)
    env.step(WALK_AWAY_ACTION)
    out = capsys.readouterr().out
    assert "No deal, I'm walking away." in out and "No deal: agent_0 walked away." in out


def test_aec_illegal_action_raises_with_act_and_legal_ones():
    env = negotiation_v0.env(contexts=[CTX], first_player=0)
    env.reset(seed=0)
    with pytest.raises(IllegalActionError) as err:
        env.step(AGREE_ACTION)
    assert isinstance(err.value, ValueError)
    assert "agree (action 250)" in str(err.value) and "walk_away (251)" in str(err.value)
    assert env.agent_selection == "agent_0" and env.unwrapped.state.turn == 0  # unchanged
    with pytest.raises(IllegalActionError, match=r"propose \(4, 1, 2\)"):
        env.step(encode_act("propose", (4, 1, 2)))


def test_aec_illegal_action_penalize():
    env = negotiation_v0.env(contexts=[CTX], first_player=1, illegal_action="penalize", illegal_penalty=-3.0,
                             no_deal_reward=0.5, render_mode="ansi")
    env.reset(seed=0)
    env.step(AGREE_ACTION)  # agent_1 has nothing to agree to
    assert all(env.terminations.values())
    assert env.rewards == {"agent_0": 0.5, "agent_1": -3.0}
    assert env.infos["agent_0"]["illegal_action"] == "agent_1" and not env.infos["agent_0"]["agreement"]
    assert "agent_1 made an illegal move" in env.render()


def test_parallel_env_plays_only_the_mover():
    env = negotiation_v0.parallel_env(contexts=[CTX], first_player=0)
    obs, infos = env.reset(seed=0)
    assert infos["agent_0"]["active_agent"] == "agent_0"
    assert obs["agent_0"]["action_mask"].any() and not obs["agent_1"]["action_mask"].any()
    # The waiting agent's entry is ignored, even if it is not a legal act.
    obs, rewards, terms, truncs, infos = env.step({"agent_0": encode_act("propose", (3, 0, 0)),
                                                    "agent_1": AGREE_ACTION})
    assert infos["agent_1"]["active_agent"] == "agent_1" and not any(terms.values())
    with pytest.raises(ValueError, match="agent_1's turn"):
        env.step({"agent_0": 0})
    obs, rewards, terms, truncs, infos = env.step({"agent_1": AGREE_ACTION})
    assert rewards == {"agent_0": 3.0, "agent_1": 4.0} and all(terms.values()) and not any(truncs.values())
    assert env.agents == [] and infos["agent_0"]["deal"] == (3, 0, 0)


def test_aec_observation_matches_rules_state():
    env = negotiation_v0.env()
    rng = np.random.default_rng(2)
    env.reset(seed=5)
    state: NegotiationState = env.unwrapped.state
    for agent in env.agent_iter():
        obs, _, term, _, _ = env.last()
        i = env.possible_agents.index(agent)
        assert np.array_equal(obs["observation"], state.observation(i))
        assert obs["observation"].dtype == np.float32 and obs["action_mask"].dtype == np.int8
        assert env.observation_space(agent).contains(obs)
        env.step(None if term else pick(obs["action_mask"], rng))


# --------------------------------------------------------------------------------------------------
# Gymnasium single-agent
# --------------------------------------------------------------------------------------------------


def test_gym_env_checker_with_policy_and_scripted_partner():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The checker samples unmasked actions, so illegal ones must end the episode rather than raise.
        check_env(NegotiationGymEnv(RandomLegal(0), illegal_action="penalize"), skip_render_check=True)
        env = gymnasium.make("parley/Negotiation-v0", partner="boulware", illegal_action="penalize")
        check_env(env.unwrapped, skip_render_check=True)


def play_gym(env, rng, seed=None):
    obs, info = env.reset(seed=seed)
    total, done, steps = 0.0, False, 0
    while not done:
        mask = env.unwrapped.action_masks()
        assert mask.dtype == bool and np.array_equal(mask, obs["action_mask"].astype(bool))
        obs, reward, done, truncated, info = env.step(pick(mask, rng))
        assert not truncated
        total += reward
        steps += 1
    return total, info, steps


def test_gym_env_rewards_are_learner_scores_and_info_has_metrics():
    env = gymnasium.make("parley/Negotiation-v0", partner=RandomLegal(1))
    rng = np.random.default_rng(0)
    sides = set()
    for seed in range(12):
        total, info, _ = play_gym(env, rng, seed)
        sides.add(info["learner_side"])
        assert total == info["score"] == info["scores"][info["learner_side"]]
        assert info["partner_score"] == info["scores"][1 - info["learner_side"]]
        assert 0 <= total <= 10 and info["partner"] == "random_legal"
        for key in ("agreement", "pareto_optimal", "pareto_distance", "nash_product", "turns", "deal"):
            assert key in info
    assert sides == {0, 1}


def test_gym_env_fixed_side_opening_partner_and_deterministic_seeding():
    env = NegotiationGymEnv(Greedy(), contexts=[CTX], learner_side=1, first_player=0)
    obs, info = env.reset(seed=0)
    # The partner (agent_0) opened by asking for everything; the learner sees that standing proposal.
    assert obs["observation"][LAYOUT.partner_offer_flag] == 1
    assert tuple(obs["observation"][LAYOUT.partner_offer]) == (0, 0, 0)
    assert tuple(obs["observation"][LAYOUT.values]) == CTX.values[1]
    obs, reward, done, _, info = env.step(encode_act("propose", (0, 0, 2)))  # the partner agrees at once
    assert done and reward == 4.0 and info["deal"] == (3, 1, 0) and info["learner_side"] == 1

    def trajectory(seed):
        e = gymnasium.make("parley/Negotiation-v0", partner="random")
        r = np.random.default_rng(9)
        return [play_gym(e, r, seed + k)[0:3:2] for k in range(4)]

    assert trajectory(3) == trajectory(3)


def test_gym_env_illegal_actions_and_bad_partners():
    env = NegotiationGymEnv(Greedy(), contexts=[CTX], learner_side=0, first_player=0)
    env.reset(seed=0)
    with pytest.raises(IllegalActionError, match="agree"):
        env.step(AGREE_ACTION)
    env = NegotiationGymEnv(Greedy(), contexts=[CTX], learner_side=0, first_player=0,
                            illegal_action="penalize", illegal_penalty=-2.0)
    env.reset(seed=0)
    _, reward, done, _, info = env.step(AGREE_ACTION)
    assert done and reward == -2.0 and info["illegal_action"] == "agent_0" and info["score"] == -2.0
    env = NegotiationGymEnv(AlwaysIllegal(), learner_side=0, first_player=0)
    env.reset(seed=0)
    with pytest.raises(RuntimeError, match="partner 'always_illegal' chose an illegal act"):
        env.step(encode_act("propose", (0, 0, 0)))
    with pytest.raises(RuntimeError, match="ended 1000 games in a row"):
        NegotiationGymEnv(WalksAway(), learner_side=0, first_player=1).reset(seed=0)
    with pytest.raises(ValueError, match="unknown partner"):
        gymnasium.make("parley/Negotiation-v0", partner="nobody")
    with pytest.raises(TypeError, match="Policy"):
        NegotiationGymEnv(partner=object())
    # Names are resolved by the registered entry points, not by the adapter classes.
    for adapter in (NegotiationGymEnv, lambda partner: NegotiationVectorEnv(2, partner)):
        with pytest.raises(TypeError, match=r"got the name 'boulware'.*make_partner\('boulware'\)"):
            adapter("boulware")
    with pytest.raises(ValueError, match="partner_kwargs only applies"):
        gymnasium.make("parley/Negotiation-v0", partner=Greedy(), partner_kwargs={"reservation": 4})
    single = gymnasium.make("parley/Negotiation-v0", partner="boulware", partner_kwargs={"reservation": 4})
    vec = gymnasium.make_vec("parley/Negotiation-v0", num_envs=2, vectorization_mode="vector_entry_point",
                             partner="boulware", partner_kwargs={"reservation": 4})
    for partner in (single.unwrapped.partner, vec.partner):
        assert partner.name == "boulware" and partner.reservation == 4
    with pytest.raises(ValueError, match="learner_side"):
        NegotiationGymEnv(Greedy(), learner_side=3)


def test_gym_env_replays_games_the_partner_ends_at_once():
    class WalkSometimes(RandomLegal):
        def act_batch(self, observations, action_masks):
            first = np.asarray(observations)[:, LAYOUT.turn_fraction] == 0
            return np.where(first & (self.rng.random(len(first)) < 0.5), WALK_AWAY_ACTION,
                            super().act_batch(observations, action_masks))

    env = NegotiationGymEnv(WalkSometimes(0), learner_side=0, first_player=1)
    replays = [env.reset(seed=s)[1]["replayed_games"] for s in range(30)]
    assert sum(replays) > 0
    assert env.state.turn == 1 and not env.state.is_terminal()  # the partner opened; the learner moves


def test_gym_render_ansi():
    env = NegotiationGymEnv(Greedy(), contexts=[CTX], learner_side=0, first_player=0, render_mode="ansi")
    env.reset(seed=0)
    env.step(encode_act("propose", (1, 1, 0)))
    text = env.render()
    assert "learner: I'd like a book and the hat; you take the rest." in text
    assert "partner (greedy): Deal." in text


def test_maskable_ppo_runs_on_the_gym_env():
    sb3_contrib = pytest.importorskip("sb3_contrib")
    env = gymnasium.make("parley/Negotiation-v0", partner=RandomLegal(0))
    from stable_baselines3.common.logger import Logger

    model = sb3_contrib.MaskablePPO("MultiInputPolicy", env, n_steps=32, batch_size=16, n_epochs=1, seed=0,
                                    device="cpu")
    model.set_logger(Logger(folder=None, output_formats=[]))  # SB3's default leaves an SB3-<date> temp folder
    model.learn(64)
    obs, _ = env.reset(seed=1)
    action, _ = model.predict(obs, action_masks=env.unwrapped.action_masks(), deterministic=True)
    assert env.unwrapped.action_masks()[int(action)]


# --------------------------------------------------------------------------------------------------
# Vector env
# --------------------------------------------------------------------------------------------------


def test_make_vec_spaces_and_action_masks():
    env = gymnasium.make_vec("parley/Negotiation-v0", num_envs=5, vectorization_mode="vector_entry_point",
                             partner=RandomLegal(0))
    assert isinstance(env, NegotiationVectorEnv)
    obs, info = env.reset(seed=0)
    assert obs["observation"].shape == (5, 36) and obs["action_mask"].shape == (5, 252)
    assert env.observation_space.contains(obs)
    assert env.single_action_space.n == 252
    masks = env.action_masks()
    assert masks.shape == (5, 252) and masks.dtype == bool
    assert np.array_equal(masks, obs["action_mask"].astype(bool))
    # Every game is at the learner's turn: the mask is non-empty and matches the learner's view.
    assert masks.any(axis=1).all()


def test_vector_env_games_match_the_single_env():
    """Same contexts, sides, openers and learner acts: the vector env and the gym env agree game by game."""
    n = 6
    rng = np.random.default_rng(4)
    contexts = [sample_context(rng) for _ in range(n)]
    for side, first in ((0, 0), (1, 0), (0, 1)):
        vec = NegotiationVectorEnv(n, Greedy(), learner_side=side, first_player=first, contexts=[contexts[0]])
        obs, _ = vec.reset(seed=0)
        keep_all = encode_act("propose", contexts[0].counts)
        scripts = [[keep_all if k < i % 4 else AGREE_ACTION for k in range(12)] for i in range(n)]
        singles = []
        for i in range(n):
            single = NegotiationGymEnv(Greedy(), learner_side=side, first_player=first, contexts=[contexts[0]])
            o, _ = single.reset(seed=0)
            assert np.array_equal(o["observation"], obs["observation"][i])
            singles.append(single)
        finished = np.zeros(n, dtype=bool)
        for k in range(12):
            actions = []
            for i in range(n):
                legal = vec.action_masks()[i]
                a = scripts[i][k]
                # Finished games restart in the vector env; any legal act keeps them going there.
                actions.append(a if not finished[i] and legal[a] else keep_all)
            obs, rewards, terms, truncs, infos = vec.step(np.array(actions))
            for i in range(n):
                if finished[i]:
                    continue
                o, r, d, _, inf = singles[i].step(actions[i])
                assert np.array_equal(o["observation"], obs["observation"][i])
                assert r == rewards[i] and d == terms[i]
                if d:
                    finished[i] = True
                    assert infos["_score"][i] and infos["score"][i] == inf["score"]
                    assert infos["agreement"][i] == inf["agreement"]
                    assert infos["pareto_optimal"][i] == inf["pareto_optimal"]
                    assert infos["turns"][i] == inf["turns"]
                    assert infos["partner_score"][i] == inf["partner_score"]
            if finished.all():
                break
        assert finished.all()


def test_vector_env_next_step_autoreset():
    vec = NegotiationVectorEnv(3, Greedy(), learner_side=0, first_player=0, contexts=[CTX])
    obs, _ = vec.reset(seed=0)
    keep_all = encode_act("propose", CTX.counts)
    obs, rewards, terms, _, infos = vec.step(np.array([WALK_AWAY_ACTION, encode_act("propose", (0, 1, 0)),
                                                       keep_all]))
    # Game 0 walked away; game 1 offered the partner everything it values, and it agreed; in game 2 the
    # partner refused and asked for everything.
    assert terms.tolist() == [True, True, False]
    assert rewards.tolist() == [0.0, 3.0, 0.0]
    assert infos["_score"].tolist() == [True, True, False] and infos["agreement"].tolist()[:2] == [False, True]
    assert not obs["action_mask"][0].any() and not vec.action_masks()[:2].any()
    # The next step ignores the finished games' actions (even illegal ones) and starts them over.
    obs, rewards, terms, _, infos = vec.step(np.array([AGREE_ACTION, AGREE_ACTION, AGREE_ACTION]))
    assert terms.tolist() == [False, False, True] and rewards[:2].tolist() == [0.0, 0.0]
    assert obs["observation"][0, LAYOUT.turn_fraction] == 0 and obs["action_mask"][:2].any(axis=1).all()
    assert infos["_score"].tolist() == [False, False, True]


def test_vector_env_illegal_actions():
    vec = NegotiationVectorEnv(3, Greedy(), learner_side=0, first_player=0, contexts=[CTX])
    vec.reset(seed=0)
    turn_before = vec.game.turn.copy()
    with pytest.raises(IllegalActionError, match=r"game 2: .*agree \(action 250\).*legal"):
        vec.step(np.array([0, 0, AGREE_ACTION]))
    assert np.array_equal(vec.game.turn, turn_before)  # nothing applied
    vec = NegotiationVectorEnv(3, Greedy(), learner_side=0, first_player=0, contexts=[CTX],
                               illegal_action="penalize", illegal_penalty=-5.0)
    vec.reset(seed=0)
    keep_all = encode_act("propose", CTX.counts)  # the partner refuses and the games go on
    _, rewards, terms, _, infos = vec.step(np.array([keep_all, keep_all, AGREE_ACTION]))
    assert terms.tolist() == [False, False, True] and rewards[2] == -5.0 and infos["illegal_action"][2]
    vec = NegotiationVectorEnv(2, AlwaysIllegal(), learner_side=0, first_player=0)
    vec.reset(seed=0)
    with pytest.raises(RuntimeError, match="partner 'always_illegal' chose an illegal act in game 0"):
        vec.step(np.array([0, 0]))


def test_vector_env_seeding_render_and_scripted_partner():
    def run(seed):
        vec = gymnasium.make_vec("parley/Negotiation-v0", num_envs=8, vectorization_mode="vector_entry_point",
                                 partner="conceder", render_mode="ansi")
        obs, _ = vec.reset(seed=seed)
        rng = np.random.default_rng(0)
        total = []
        for _ in range(30):
            masks = vec.action_masks()
            actions = np.where(masks, rng.random(masks.shape), -1).argmax(1)
            obs, rewards, *_ = vec.step(actions)
            total.append(rewards.copy())
        return np.array(total), obs["observation"], vec.render()

    a, obs_a, frames = run(5)
    b, obs_b, _ = run(5)
    assert np.array_equal(a, b) and np.array_equal(obs_a, obs_b)
    assert len(frames) == 8 and "partner (conceder)" in frames[0]
    with pytest.raises(ValueError, match="num_envs"):
        NegotiationVectorEnv(0, Greedy())


# --------------------------------------------------------------------------------------------------
# One-way flow: the envs import nothing from parley.agents
# --------------------------------------------------------------------------------------------------

ENVS_DIR = Path(negotiation_v0.__file__).parent


def test_envs_modules_import_nothing_from_agents():
    # Statically, including imports inside functions (the old adapters imported the partners lazily) ...
    for path in sorted(ENVS_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "parley.agents" or n.startswith("parley.agents.") for n in names), \
                f"{path.name}, line {node.lineno} imports {names} from parley.agents"
    # ... and at run time: every envs module imported, and each adapter played, in a fresh interpreter.
    script = textwrap.dedent("""
        import importlib, pkgutil, sys
        import numpy as np
        import parley.envs
        for m in pkgutil.iter_modules(parley.envs.__path__, "parley.envs."):
            importlib.import_module(m.name)
        from parley.envs import negotiation_v0
        from parley.envs.negotiation_gym import NegotiationGymEnv
        from parley.envs.negotiation_vector import NegotiationVectorEnv
        from parley.envs.policy import BatchPolicy

        class WalkAway(BatchPolicy):
            def act_batch(self, observations, action_masks):
                return np.full(len(observations), 251)

        env = negotiation_v0.env()
        env.reset(seed=0)
        env.step(251)
        NegotiationGymEnv(WalkAway(), learner_side=0, first_player=0).reset(seed=0)
        NegotiationVectorEnv(4, WalkAway(), learner_side=0, first_player=0).reset(seed=0)
        print(sorted(m for m in sys.modules if m == "parley.agents" or m.startswith("parley.agents.")))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout

