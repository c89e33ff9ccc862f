"""Targeted data acquisition (Kwon et al. 2021): RL exploration guided by an expert oracle.

Agents trained on a fixed corpus get *either* high utility *or* cooperation: a supervised (SL) agent
imitates cooperative people but bargains weakly; an RL agent trained against a fixed SL partner model
learns to exploit that model's mistakes and stops making Pareto-optimal deals. Targeted data
acquisition lets the RL learner explore, asks an expert oracle how the partner would really answer in
the states the learner reached outside the corpus, and updates the partner model with those answers.

The loop, round ``r = 1 .. rounds`` (:func:`run_tda`):

1. train the RL learner (masked PPO, :mod:`parley.agents.training.ppo`) against the current partner model;
2. roll out learner vs partner model and collect the states where the partner answers the learner;
3. select at most ``queries_per_round`` of them (:mod:`parley.oracles.selection`);
4. query the oracle; validate every answer (illegal ones are rejected and logged, never used);
5. add the answers to the partner's dataset (weighted ``oracle_weight``) and retrain the partner;
6. log the round and write checkpoints; a run directory left half-way resumes where it stopped.

Run directory layout::

    sl/                     the SL policy both the learner and the partner model start from
    round_NN/learner/       the learner after round NN (a TorchPolicy directory)
    round_NN/partner/       the partner model after round NN
    latest_policy           path of the newest learner (so load_policy(run_dir) finds it)
    oracle_data.npz         all accepted oracle answers as (observation, mask, action, weight)
    oracle_answers.jsonl    every query with its answer, or the reason it was rejected
    log.jsonl               one line per round (see TDARoundLog)
    state.json              what resuming needs: last finished round, queries used, asked / pending ids
    final_metrics.json      the learner's evaluation rows (written by ``parley tda``)

The same module trains the baselines under one harness (:func:`train_method`): ``sl``; ``rl`` (PPO vs
the fixed SL partner); ``sl+rl`` (PPO with an interleaved behaviour-cloning loss); ``rl_pareto``,
``rl_prosocial``, ``rl_fair`` (PPO with tailored rewards); and ``tda``. The RL methods get the same
number of training games as the TDA learner. Learners are measured like every other policy, with
:func:`parley.agents.evaluation.evaluate_policy`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from parley.agents.nn.torch_policy import TorchPolicy
from parley.agents.training.ppo import PPOConfig, train_ppo
from parley.agents.training.supervised import (
    SupervisedConfig,
    action_accuracy,
    clone_policy,
    train_supervised,
)
from parley.envs.corpus import ActDataset
from parley.oracles.base import Oracle, OracleQuery, answers_to_dataset, collect_answers
from parley.oracles.selection import (
    SELECTIONS,
    collect_candidates,
    ensemble_scores,
    likelihood_scores,
    novelty_scores,
    select_queries,
)

METHODS: dict[str, str] = {
    "sl": "behaviour cloning on the corpus",
    "rl": "PPO against the fixed SL partner model, own points as reward",
    "sl+rl": "PPO against the fixed SL partner with an interleaved behaviour-cloning loss",
    "rl_pareto": "PPO, reward = own points + a bonus for Pareto-optimal deals",
    "rl_prosocial": "PPO, reward = w * own + (1 - w) * partner points",
    "rl_fair": "PPO, reward = own points - a penalty on the score gap",
    "tda": "targeted data acquisition: PPO, oracle queries where the learner left the corpus, partner updates",
}


@dataclass
class TDAConfig:
    """Hyperparameters of the acquisition loop and its baselines."""

    rounds: int = 5
    queries_per_round: int = 300
    selection: str = "likelihood"
    candidate_games: int = 600
    oracle_weight: float = 30.0
    partner_epochs: int = 5
    ensemble_size: int = 3
    eval_games: int = 600
    ppo: PPOConfig = field(default_factory=lambda: PPOConfig(total_games=6_000))
    supervised: SupervisedConfig = field(default_factory=SupervisedConfig)
    sl_rl_coef: float = 0.5
    prosocial_weight: float = 0.6
    pareto_bonus: float = 3.0
    fairness_weight: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise ValueError(f"unknown selection {self.selection!r}; choose one of {', '.join(SELECTIONS)}")
        if self.rounds < 1 or self.queries_per_round < 0:
            raise ValueError("rounds must be >= 1 and queries_per_round >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TDAConfig:
        data = dict(data)
        ppo = PPOConfig(**data.pop("ppo", {}))
        sup = data.pop("supervised", {})
        if "backbone_config" in sup and isinstance(sup["backbone_config"].get("hidden_sizes"), list):
            sup["backbone_config"]["hidden_sizes"] = tuple(sup["backbone_config"]["hidden_sizes"])
        return cls(ppo=ppo, supervised=SupervisedConfig(**sup), **data)


@dataclass
class TDARoundLog:
    """What one round did and measured."""

    round: int
    queries_asked: int  # new queries sent this round (the budget counts these)
    queries_used: int  # answers accepted into the partner's data so far, all rounds
    answers_accepted: int
    answers_rejected: int
    answers_pending: int
    candidates: int
    partner_accuracy_before: float  # partner model vs the new oracle answers, before retraining
    partner_accuracy_after: float
    learner_score: float  # last PPO iteration, against the partner model
    learner_partner_score: float
    learner_agreement: float
    learner_pareto: float
    seconds: float


@dataclass
class TDAResult:
    learner: TorchPolicy
    partner: TorchPolicy
    logs: list[TDARoundLog]
    out_dir: Path


def _round_rng(seed: int, round_index: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, round_index, purpose]))


def _score_candidates(config: TDAConfig, candidates, partner: TorchPolicy, corpus: ActDataset,
                      oracle_data: ActDataset, rng: np.random.Generator) -> np.ndarray:
    if config.selection == "likelihood":
        return likelihood_scores(candidates, partner)
    if config.selection == "novelty":
        return novelty_scores(candidates, corpus.observations, seed=int(rng.integers(2**31)))
    if config.selection == "ensemble":
        data = corpus.concat(oracle_data)
        members = []
        for k in range(max(2, config.ensemble_size)):
            boot = data.subset(rng.integers(0, len(data), size=len(data)))
            sup = replace(config.supervised, epochs=1, seed=int(rng.integers(2**31)))
            members.append(train_supervised(boot, sup, policy=clone_policy(partner, name=f"member{k}")).policy)
        return ensemble_scores(candidates, members)
    return rng.random(len(candidates))


def _save_state(out: Path, state: dict[str, Any]) -> None:
    tmp = out / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(out / "state.json")


def run_tda(corpus: ActDataset, oracle: Oracle, config: TDAConfig, out_dir: str | Path, *,
            sl_policy: TorchPolicy | None = None, log: Callable[[str], None] | None = print) -> TDAResult:
    """Run (or resume) the acquisition loop in ``out_dir``; see the module docstring."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = log or (lambda _msg: None)
    state_file = out / "state.json"

    # ---- start, or resume from the last finished round ---------------------------------------------
    if state_file.is_file():
        state = json.loads(state_file.read_text())
        saved = {k: v for k, v in state.get("config", {}).items() if k != "rounds"}
        wanted = {k: v for k, v in json.loads(json.dumps(config.to_dict())).items() if k != "rounds"}
        if saved != wanted:
            changed = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
            raise ValueError(f"{out} holds a run with a different configuration ({', '.join(changed)} differ); "
                             "use another --out directory, or the same options to resume it (only the "
                             "number of rounds may grow)")
        state["config"] = json.loads(json.dumps(config.to_dict()))
        last = state["completed_round"]
        base = out / (f"round_{last:02d}" if last else "sl")
        learner = TorchPolicy.load(base / ("learner" if last else ""), deterministic=False, seed=config.seed)
        partner = TorchPolicy.load(base / ("partner" if last else ""), deterministic=False, seed=config.seed + 1)
        oracle_data = ActDataset.load(out / "oracle_data.npz") if (out / "oracle_data.npz").is_file() \
            else ActDataset.empty(learner.observation_size)
        logs = [TDARoundLog(**json.loads(line)) for line in (out / "log.jsonl").read_text().splitlines()
                if line.strip()] if (out / "log.jsonl").is_file() else []
        say(f"resuming {out} after round {last}")
    else:
        if sl_policy is None:
            sl_policy = train_supervised(corpus, config.supervised, name="sl").policy
        sl_policy.save(out / "sl")
        learner = clone_policy(sl_policy, name="tda", deterministic=False, seed=config.seed)
        partner = clone_policy(sl_policy, name="partner-model", deterministic=False, seed=config.seed + 1)
        oracle_data = ActDataset.empty(learner.observation_size)
        logs = []
        state = {"config": json.loads(json.dumps(config.to_dict())), "completed_round": 0, "queries_used": 0,
                 "queries_asked": 0, "asked": [], "pending": []}
        _save_state(out, state)
    asked: set[str] = set(state["asked"])
    pending = [OracleQuery.from_dict(q) for q in state["pending"]]

    for r in range(state["completed_round"] + 1, config.rounds + 1):
        started = time.perf_counter()
        # 1. train the learner against the current partner model
        ppo = train_ppo(learner, partner, replace(config.ppo, seed=config.seed * 1000 + r))
        last_ppo = ppo.history[-1]

        # 2. roll out and gather the states where the partner answers the learner
        candidates = collect_candidates(learner, partner, config.candidate_games, _round_rng(config.seed, r, 1),
                                        max_turns=config.ppo.max_turns, round_index=r)

        # 3. select the states furthest from the corpus, within the budget
        select_rng = _round_rng(config.seed, r, 2)
        scores = _score_candidates(config, candidates, partner, corpus, oracle_data, select_rng)
        chosen = select_queries(candidates, scores, config.queries_per_round, select_rng, asked)
        new_queries = [candidates.queries[i] for i in chosen]
        for i, q in zip(chosen, new_queries):
            q.meta["score"] = float(scores[i])
        asked.update(q.query_id for q in new_queries)

        # 4. ask the oracle (earlier unanswered queries again, too) and validate every answer
        batch = collect_answers(oracle, pending + new_queries)
        with (out / "oracle_answers.jsonl").open("a") as f:
            for q, a in batch.accepted:
                f.write(json.dumps({"round": r, "query": q.to_dict(), "answer": a.to_dict()}) + "\n")
            for q, a, reason in batch.rejected:
                f.write(json.dumps({"round": r, "query": q.to_dict(), "answer": a.to_dict(), "rejected": reason}) + "\n")
        for _q, _a, reason in batch.rejected:
            say(f"round {r}: rejected an oracle answer: {reason}")
        pending = batch.pending

        # 5. add the answers to the partner's data and retrain the partner model
        new_data = answers_to_dataset(batch.accepted, weight=config.oracle_weight)
        accuracy_before = action_accuracy(partner, new_data) if len(new_data) else float("nan")
        if len(new_data):
            oracle_data = oracle_data.concat(new_data)
            partner_config = replace(config.supervised, epochs=config.partner_epochs, seed=config.seed * 1000 + r)
            partner = train_supervised(corpus.concat(oracle_data), partner_config, policy=partner,
                                       name="partner-model").policy
        accuracy_after = action_accuracy(partner, new_data) if len(new_data) else float("nan")

        # 6. log and checkpoint
        round_log = TDARoundLog(
            round=r, queries_asked=len(new_queries), queries_used=len(oracle_data),
            answers_accepted=len(batch.accepted), answers_rejected=len(batch.rejected),
            answers_pending=len(pending), candidates=len(candidates),
            partner_accuracy_before=accuracy_before, partner_accuracy_after=accuracy_after,
            learner_score=last_ppo["score"], learner_partner_score=last_ppo["partner_score"],
            learner_agreement=last_ppo["agreement"], learner_pareto=last_ppo["pareto"],
            seconds=time.perf_counter() - started)
        logs.append(round_log)
        round_dir = out / f"round_{r:02d}"
        learner.metadata["tda_round"] = r
        learner.save(round_dir / "learner")
        partner.save(round_dir / "partner")
        oracle_data.save(out / "oracle_data.npz")
        with (out / "log.jsonl").open("a") as f:
            f.write(json.dumps(asdict(round_log)) + "\n")
        (out / "latest_policy").write_text(f"round_{r:02d}/learner")
        state.update(completed_round=r, queries_used=len(oracle_data),
                     queries_asked=state["queries_asked"] + len(new_queries), asked=sorted(asked),
                     pending=[q.to_dict() for q in pending])
        _save_state(out, state)
        say(f"round {r}/{config.rounds}: {len(new_queries)} queries, {len(batch.accepted)} answers accepted, "
            f"{len(batch.rejected)} rejected, {len(pending)} pending; partner accuracy on them "
            f"{accuracy_before:.2f} -> {accuracy_after:.2f}; learner vs partner model: score "
            f"{round_log.learner_score:.2f}, partner {round_log.learner_partner_score:.2f}, "
            f"agreement {round_log.learner_agreement:.2f}, Pareto {round_log.learner_pareto:.2f} "
            f"({round_log.seconds:.1f}s)")
    return TDAResult(learner, partner, logs, out)


# --------------------------------------------------------------------------------------------------
# Baselines in the same harness
# --------------------------------------------------------------------------------------------------


def train_method(method: str, sl_policy: TorchPolicy, corpus: ActDataset, config: TDAConfig,
                 out_dir: str | Path, oracle: Oracle | None = None,
                 log: Callable[[str], None] | None = None) -> TorchPolicy:
    """Train one method of :data:`METHODS` from the shared SL policy; save it under ``out_dir/method``.

    RL methods train against a sampling copy of the SL policy (the fixed partner model) for
    ``rounds * ppo.total_games`` games, the TDA learner's budget.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    out = Path(out_dir) / method.replace("+", "_")
    if method == "sl":
        policy = clone_policy(sl_policy, name="sl", deterministic=False, seed=config.seed)
        policy.save(out)
        return policy
    if method == "tda":
        if oracle is None:
            raise ValueError("the tda method needs an oracle")
        result = run_tda(corpus, oracle, config, out, sl_policy=sl_policy, log=log)
        return result.learner
    ppo = replace(config.ppo, total_games=config.ppo.total_games * config.rounds, seed=config.seed * 1000 + 7)
    sl_data = None
    if method == "sl+rl":
        ppo = replace(ppo, sl_coef=config.sl_rl_coef)
        sl_data = corpus
    elif method == "rl_pareto":
        ppo = replace(ppo, reward="pareto_bonus", pareto_bonus=config.pareto_bonus)
    elif method == "rl_prosocial":
        ppo = replace(ppo, reward="prosocial", prosocial_weight=config.prosocial_weight)
    elif method == "rl_fair":
        ppo = replace(ppo, reward="fairness", fairness_weight=config.fairness_weight)
    learner = clone_policy(sl_policy, name=method, deterministic=False, seed=config.seed)
    partner = clone_policy(sl_policy, name="sl-partner", deterministic=False, seed=config.seed + 1)
    train_ppo(learner, partner, ppo, sl_data=sl_data)
    learner.save(out)
    return learner


def config_with(config: TDAConfig, **changes: Any) -> TDAConfig:
    """A copy of ``config`` with top-level fields changed (``ppo`` / ``supervised`` take dicts of changes)."""
    for key in ("ppo", "supervised"):
        if key in changes and isinstance(changes[key], dict):
            changes[key] = dataclasses.replace(getattr(config, key), **changes[key])
    return dataclasses.replace(config, **changes)
