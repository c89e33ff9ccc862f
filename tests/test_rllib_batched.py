"""RLlib on the batched rules: the vectorised multi-agent env against the per-step adapter, legality of
every act RLlib's sampling sends to the env, resume on the batched path, and a quiet console."""

from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from parley.agents.training.rllib_connector import EpisodeChunks  # noqa: E402
from parley.agents.training.rllib_envs import (  # noqa: E402
    NegotiationMultiAgentEnv,
    NegotiationVectorMultiAgentEnv,
)
from parley.agents.training.run import TrainConfig, read_progress, resolve_train_config, train  # noqa: E402
from parley.envs.negotiation import Context, IllegalActionError  # noqa: E402

POOL = ["boulware", "tit_for_tat", "random"]


def fixed_policy(observation: dict, step: int) -> int:
    """A deterministic legal act that depends on the observation (so diverging games diverge in acts)."""
    legal = np.flatnonzero(observation["action_mask"])
    key = int(np.asarray(observation["observation"]).sum() * 7 + step) % len(legal)
    return int(legal[key])


def same_dict(a: dict, b: dict) -> bool:
    if set(a) != set(b):
        return False
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, dict):
            if not isinstance(y, dict) or not same_dict(x, y):
                return False
        elif isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            if not np.array_equal(np.asarray(x), np.asarray(y)):
                return False
        elif isinstance(x, float) or isinstance(y, float):
            if not np.isclose(float(x), float(y)):
                return False
        elif x != y:
            return False
    return True


def test_vector_multi_agent_env_plays_the_same_episodes_as_the_per_step_adapter():
    """Each batched game is replayed in its own per-step env with the same context and first mover; both
    get the same acts from a fixed policy and must report the same dicts, step by step, across resets."""
    n = 16
    config = {"max_turns": 6, "reward_scale": 0.1}
    vector = NegotiationVectorMultiAgentEnv(n, config)
    singles = [NegotiationMultiAgentEnv(dict(config)) for _ in range(n)]

    def replay_reset(i: int) -> tuple[dict, dict]:
        game = vector.game
        ctx = Context(tuple(int(c) for c in game.counts[i]),
                      tuple(tuple(int(v) for v in side) for side in game.values[i]))
        return singles[i].reset(options={"context": ctx, "first_player": int(game.first_player[i])})

    obs, infos = vector.reset(seed=3)
    for i in range(n):
        single_obs, single_infos = replay_reset(i)
        assert same_dict(obs[i], single_obs) and same_dict(infos[i], single_infos)
    episodes_ended, restarts = 0, 0
    for step in range(60):
        actions = [{agent: fixed_policy(o, step) for agent, o in obs[i].items() if o["action_mask"].any()}
                   for i in range(n)]
        restarting = vector.needs_reset.copy()
        obs, rewards, terminated, truncated, infos = vector.step(actions)
        for i in range(n):
            if restarting[i]:
                restarts += 1
                single_obs, single_infos = replay_reset(i)
                assert same_dict(obs[i], single_obs) and same_dict(infos[i], single_infos)
                assert rewards[i] == {"agent_0": 0.0, "agent_1": 0.0} and terminated[i]["__all__"] is False
                continue
            expected = singles[i].step(actions[i])
            for got, want in zip((obs[i], rewards[i], terminated[i], truncated[i], infos[i]), expected):
                assert same_dict(got, want), (step, i, got, want)
            episodes_ended += bool(terminated[i]["__all__"])
    assert episodes_ended > 2 * n and restarts > n  # several whole episodes per game, through autoreset


def test_vector_multi_agent_env_raises_on_an_illegal_act_and_on_bad_settings():
    env = NegotiationVectorMultiAgentEnv(4, {"first_player": 0})
    obs, _ = env.reset(seed=0)
    assert all(list(o) == ["agent_0"] for o in obs)
    actions = [{"agent_0": fixed_policy(o["agent_0"], 0)} for o in obs]
    actions[2] = {"agent_0": 250}  # agree with no proposal on the table
    with pytest.raises(IllegalActionError, match="game 2"):
        env.step(actions)
    with pytest.raises(ValueError, match="agent_0's turn"):
        env.step([{"agent_1": 0}] * 4)
    with pytest.raises(ValueError, match="unknown env settings"):
        NegotiationVectorMultiAgentEnv(4, {"max_turn": 5})


# --------------------------------------------------------------------------------------------------
# Through RLlib
# --------------------------------------------------------------------------------------------------


def illegal_acts(episode) -> tuple[int, int]:
    """(acts, illegal acts) of a single-agent episode chunk (or the batched runner's chunks): each act
    checked against its observation's mask."""
    if isinstance(episode, EpisodeChunks):
        actions, masks = episode.columns["actions"], episode.observations["action_mask"]
    else:
        actions = np.asarray(episode.get_actions())
        masks = np.asarray(episode.get_observations()["action_mask"])[:len(actions)]
    return len(actions), int(np.count_nonzero(masks[np.arange(len(actions)), actions] == 0))


@pytest.mark.parametrize("setup", ["partners", "partners, RLlib's env runner", "self-play"])
def test_rllib_sampling_sends_only_legal_acts(setup, ray_session):
    """Thousands of acts sampled by the RLModule (exploration) through the env runner, each checked against
    the legal mask it was sampled under; the envs would also raise on an illegal act."""
    from parley.agents.training import rllib_setups as setups

    settings = setups.PPOSettings(train_batch_size=512, minibatch_size=256, num_epochs=1, num_envs_per_env_runner=64,
                                  batched_sampling=setup == "partners")
    if setup.startswith("partners"):
        config = setups.partner_pool_config(POOL, settings=settings)
    else:
        config = setups.self_play_config(settings=settings, league_size=2)
    algo = config.build_algo()
    try:
        acts = illegal = 0
        for episode in algo.env_runner.sample(num_timesteps=12_000, explore=True):
            chunks = episode.agent_episodes.values() if hasattr(episode, "agent_episodes") else [episode]
            for chunk in chunks:
                n, bad = illegal_acts(chunk)
                acts, illegal = acts + n, illegal + bad
    finally:
        algo.stop()
    assert acts >= 10_000 and illegal == 0


def test_batched_partner_pool_runner_samples_the_chunks_rllibs_runner_samples(ray_session):
    """Greedy acts from the same module on the same seeded games: the batched runner and RLlib's runner
    (episodes gathered into chunks) return the same chunks -- steps, acts, rewards, where each chunk ends,
    whether it terminated, the state it bootstraps from -- over two sample calls (chunks continue)."""
    from parley.agents.training import rllib_setups as setups

    def sampled(batched: bool) -> list[EpisodeChunks]:
        settings = setups.PPOSettings(train_batch_size=512, minibatch_size=256, num_epochs=1,
                                      num_envs_per_env_runner=32, batched_sampling=batched)
        algo = setups.partner_pool_config(["boulware", "tit_for_tat", "conceder"], settings=settings, seed=5).build_algo()
        try:
            calls = [algo.env_runner.sample(num_timesteps=400, explore=False) for _ in range(2)]
        finally:
            algo.stop()
        if batched:
            return [call[0] for call in calls]
        return [EpisodeChunks.from_episodes("default_policy", call) for call in calls]

    def chunk_set(chunks: EpisodeChunks) -> list[tuple]:
        starts = np.concatenate(([0], chunks.ends[:-1]))
        bootstrap = iter(chunks.bootstrap_observations["observation"])
        rows = []
        for start, end, terminated in zip(starts, chunks.ends, chunks.terminated):
            rows.append((chunks.observations["observation"][start:end].tobytes(),
                         chunks.observations["action_mask"][start:end].tobytes(),
                         chunks.columns["actions"][start:end].astype(np.int64).tobytes(),
                         chunks.rewards[start:end].tobytes(),
                         bool(terminated), None if terminated else next(bootstrap).tobytes()))
        return sorted(rows, key=repr)

    ours, rllibs = sampled(True), sampled(False)
    for mine, theirs in zip(ours, rllibs):
        assert len(mine) == len(theirs) >= 400 and len(mine.ends) == len(theirs.ends)
        assert chunk_set(mine) == chunk_set(theirs)
        assert 0 < (~mine.terminated).sum() < len(mine.ends)  # some chunks stay open at the end of a call


def test_self_play_on_the_batched_rules_checkpoints_and_resumes(ray_session, tmp_path):
    run = tmp_path / "self-play"
    tiny = dict(train_batch_size=512, minibatch_size=256, num_epochs=1, num_envs_per_env_runner=16, eval_episodes=2,
                league_size=2, league_threshold=-1.0, live=False)
    first = train(TrainConfig(self_play=True, iterations=2, checkpoint_every=1, out=str(run), **tiny), evaluate=False)
    assert first.iterations == 2 and first.env_steps >= 1024
    resumed = train(resolve_train_config({"resume": True, "out": str(run), "iterations": 3}), evaluate=False)
    assert resumed.iterations == 3 and resumed.env_steps > first.env_steps
    rows = read_progress(run)
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3]
    assert int(rows[-1]["league_snapshots"]) == 3  # the two restored snapshots plus this iteration's


def test_a_run_keeps_rays_warnings_off_the_console(tmp_path, capfd):
    """Ray's and RLlib's start-up warnings land in OUT/ray.log; --verbose would show them."""
    run = tmp_path / "quiet"
    train(TrainConfig(iterations=1, train_batch_size=256, minibatch_size=128, num_epochs=1, num_envs_per_env_runner=8,
                      partners=["boulware"], out=str(run), live=False), evaluate=False)
    console = "\n".join(capfd.readouterr())
    for marker in ("WARNING", "DeprecationWarning", "gputil", "new API stack"):
        assert marker not in console, console
    log = (run / "ray.log").read_text()
    assert "gputil" in log or "new API stack" in log, log  # RLlib warns of both (the second once a process)


@pytest.mark.parametrize("setup", ["self-play", "independent"])
def test_whole_games_runner_returns_each_seats_whole_episodes(setup, ray_session):
    """Every chunk is one seat's acts in one game, in order: the same context throughout, the turn two acts
    further on at each step, the first act at turn 0 or 1 as the seat moved first or second; terminated,
    with the seat's final reward on its last step only. Only trained modules' acts come back."""
    from parley.agents.training import rllib_setups as setups
    from parley.envs.negotiation import ObservationLayout

    settings = setups.PPOSettings(train_batch_size=512, minibatch_size=256, num_epochs=1, num_envs_per_env_runner=32)
    if setup == "self-play":
        config, trained = setups.self_play_config(settings=settings, league_size=2), {"learner"}
    else:
        config, trained = setups.independent_learners_config(settings=settings), {"learner_0", "learner_1"}
    algo = config.build_algo()
    try:
        chunks = algo.env_runner.sample(num_timesteps=1500, explore=True)
    finally:
        algo.stop()
    assert {c.module_id for c in chunks} == trained
    lay = ObservationLayout(settings.max_turns)
    episodes = 0
    for c in chunks:
        assert c.terminated.all() and len(c.bootstrap_observations["observation"]) == 0
        starts = np.concatenate(([0], c.ends[:-1]))
        for start, end in zip(starts, c.ends):
            obs = c.observations["observation"][start:end]
            turns = np.rint(obs[:, lay.turn_fraction] * settings.max_turns).astype(int)
            assert turns[0] == (0 if obs[0, lay.moved_first] > 0.5 else 1)
            assert np.array_equal(np.diff(turns), np.full(len(turns) - 1, 2))
            assert (obs[:, :6] == obs[0, :6]).all()
            assert np.count_nonzero(c.rewards[start:end - 1]) == 0
            episodes += 1
    assert episodes > 100
