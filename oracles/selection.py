"""Query selection: which dialogue states the acquisition loop sends to the oracle.

The learner explores; where it takes a dialogue somewhere the corpus never went, the partner model is
guessing. Those are the states worth an expert's answer (Kwon et al. 2021). Each round:

1. :func:`collect_candidates` plays the learner against the partner model and keeps every state in
   which the *partner* must answer an act the learner just sent (the oracle answers for the partner).
2. A scorer rates each candidate -- higher means further from the corpus distribution:

   ``likelihood``  ``-log p(learner's act)`` under the partner model, which was fitted to corpus acts
                   of both sides: acts the corpus would rarely produce score high (the default);
   ``novelty``     distance from the state (counts, values, standing offers, turn -- scaled to [0, 1])
                   to the nearest corpus state;
   ``ensemble``    disagreement among partner models fitted to bootstrap resamples of the partner's
                   data: the mean KL divergence of each member's action distribution from their average;
   ``random``      uniform scores (a control).

3. :func:`select_queries` keeps the ``budget`` highest-scoring distinct states not asked before
   (ties broken at random); ``budget`` is the per-round query budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from parley.agents.nn.torch_policy import TorchPolicy
from parley.agents.training.supervised import action_log_likelihood, action_probabilities
from parley.envs.negotiation import NUM_ACTIONS, ObservationLayout, sample_context_arrays
from parley.envs.play import PlayStep, play_batch, seating_for
from parley.envs.policy import Policy
from parley.oracles.base import OracleQuery

SELECTIONS = ("likelihood", "novelty", "ensemble", "random")


@dataclass
class Candidates:
    """States where the partner must answer the learner, with what the learner did just before."""

    queries: list[OracleQuery]
    observations: np.ndarray  # (N, D) the responder's observation
    masks: np.ndarray  # (N, 252) the responder's legal acts
    learner_observations: np.ndarray  # (N, D) the learner's observation when it sent its last act
    learner_masks: np.ndarray
    learner_actions: np.ndarray  # (N,)

    def __len__(self) -> int:
        return len(self.queries)


def collect_candidates(learner: Policy, partner: Policy, num_games: int, rng: np.random.Generator,
                       max_turns: int = 10, round_index: int | None = None) -> Candidates:
    """Play ``num_games`` games learner vs partner (seats and first mover drawn) and gather candidates."""
    n = num_games
    counts, values = sample_context_arrays(rng, n)
    learner_seat = rng.integers(0, 2, size=n)
    first_player = rng.integers(0, 2, size=n)
    size = ObservationLayout(max_turns).size
    last_obs = np.zeros((n, size), np.float32)
    last_mask = np.zeros((n, NUM_ACTIONS), np.int8)
    last_action = np.full(n, -1, np.int64)
    queries, obs_rows, mask_rows, l_obs, l_masks, l_actions = [], [], [], [], [], []

    def gather(step: PlayStep) -> None:
        if step.agent == 0:  # the learner: remember what it sent, for the partner's answer
            last_obs[step.rows], last_mask[step.rows], last_action[step.rows] = \
                step.observations, step.masks, step.actions
            return
        game = step.game
        for j, g in enumerate(step.rows):
            if last_action[g] < 0:
                continue  # the partner opens: nothing the learner did led here
            turn = int(game.turn[g])
            queries.append(OracleQuery(
                tuple(game.counts[g]), tuple(map(tuple, game.values[g])), int(game.first_player[g]),
                tuple(game.history_actions[g, :turn]), int(1 - learner_seat[g]), max_turns,
                {} if round_index is None else {"round": round_index}))
            obs_rows.append(step.observations[j])
            mask_rows.append(step.masks[j])
            l_obs.append(last_obs[g].copy())
            l_masks.append(last_mask[g].copy())
            l_actions.append(last_action[g])

    play_batch((learner, partner), counts, values, first_player, seating=seating_for(learner_seat),
               max_turns=max_turns, on_step=gather)
    if not queries:
        empty = np.zeros((0, size), np.float32)
        return Candidates([], empty, np.zeros((0, NUM_ACTIONS), np.int8), empty, np.zeros((0, NUM_ACTIONS), np.int8),
                          np.zeros(0, np.int64))
    return Candidates(queries, np.stack(obs_rows), np.stack(mask_rows).astype(np.int8), np.stack(l_obs),
                      np.stack(l_masks).astype(np.int8), np.array(l_actions, dtype=np.int64))


def state_features(observations: np.ndarray) -> np.ndarray:
    """The observation header scaled to [0, 1]: counts, own values, offer flags and items, turn fraction."""
    lay = ObservationLayout.from_size(observations.shape[1])
    header = observations[:, :lay.header_size].astype(np.float32).copy()
    header[:, lay.counts] /= 4.0
    header[:, lay.values] /= 10.0
    header[:, lay.partner_offer] /= 4.0
    header[:, lay.own_offer] /= 4.0
    return header


def likelihood_scores(candidates: Candidates, partner_model: TorchPolicy) -> np.ndarray:
    """``-log p(learner's last act)`` under the partner model (a model of corpus behaviour)."""
    return -action_log_likelihood(partner_model, candidates.learner_observations, candidates.learner_masks,
                                  candidates.learner_actions)


def novelty_scores(candidates: Candidates, corpus_observations: np.ndarray, max_reference: int = 20_000,
                   seed: int = 0) -> np.ndarray:
    """Distance from each candidate state to its nearest corpus state (in :func:`state_features`)."""
    if len(corpus_observations) == 0:
        raise ValueError("novelty needs corpus observations to compare against")
    ref = corpus_observations
    if len(ref) > max_reference:
        ref = ref[np.random.default_rng(seed).choice(len(ref), max_reference, replace=False)]
    ref_t = torch.as_tensor(state_features(ref))
    out = []
    for start in range(0, len(candidates), 2048):
        feats = torch.as_tensor(state_features(candidates.observations[start:start + 2048]))
        out.append(torch.cdist(feats, ref_t).min(dim=1).values.numpy())
    return np.concatenate(out) if out else np.zeros(0)


def ensemble_scores(candidates: Candidates, members: Sequence[TorchPolicy]) -> np.ndarray:
    """Mean KL divergence of each member's answer distribution from the members' average."""
    if len(members) < 2:
        raise ValueError("ensemble disagreement needs at least two partner models")
    probs = np.stack([action_probabilities(m, candidates.observations, candidates.masks) for m in members])
    mean = probs.mean(axis=0, keepdims=True)
    kl = (probs * (np.log(probs + 1e-12) - np.log(mean + 1e-12))).sum(axis=-1)
    return kl.mean(axis=0)


def select_queries(candidates: Candidates, scores: np.ndarray, budget: int, rng: np.random.Generator,
                   already_asked: set[str] | frozenset[str] = frozenset()) -> np.ndarray:
    """Indices of the ``budget`` best-scoring distinct candidates not asked before (random tie-breaks)."""
    if budget < 0:
        raise ValueError(f"the query budget must be >= 0, got {budget}")
    if len(scores) != len(candidates):
        raise ValueError("one score per candidate is needed")
    jitter = rng.random(len(scores)) * 1e-9
    order = np.lexsort((jitter, -np.asarray(scores, dtype=np.float64)))
    chosen, seen = [], set(already_asked)
    for i in order:
        if len(chosen) >= budget:
            break
        qid = candidates.queries[i].query_id
        if qid in seen:
            continue
        seen.add(qid)
        chosen.append(i)
    return np.array(chosen, dtype=np.int64)
