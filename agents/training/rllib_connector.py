"""PPO's learner connector for short episodes: every episode chunk of an iteration to one train batch in a
single numpy pass, with GAE computed over the whole batch at once.

RLlib's default PPO learner pipeline walks the episodes one by one several times (one artificial step
appended to each, observations, columns, batching, GAE per episode) and keeps the artificial step in
the train batch as a zero-loss row. Negotiation episodes last 1-5 learner steps, so that walk and those
rows (about 45% more rows than env steps) cost more than the steps themselves.
:class:`BatchedPPOLearnerConnector` replaces the whole pipeline:

* it gathers observations, actions, log-probabilities and action-distribution inputs of all episode
  chunks with one concatenation per column;
* it computes the value of every step in one forward pass, plus the bootstrap value of the last
  observation only for chunks that did not terminate (a terminated episode has no next state: RLlib's
  pipeline computes that value too and multiplies it by zero);
* it runs GAE over all chunks at once (:func:`gae_advantages`) and standardises the advantages;
* the train batch holds the env steps only, so PPO's loss is a plain mean and a minibatch of
  ``minibatch_size`` rows holds that many env steps.

Value targets equal RLlib's on every real step; advantages differ from RLlib's only in the
standardisation, which RLlib takes over its artificial rows as well (``tests/test_rllib_connector.py``
checks both on sampled episodes).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing

#: Episode columns the PPO loss reads, besides observations (extra model outputs are per step like acts).
EPISODE_COLUMNS = (Columns.ACTIONS, Columns.ACTION_LOGP, Columns.ACTION_DIST_INPUTS)


def gae_advantages(rewards: np.ndarray, values: np.ndarray, ends: np.ndarray, bootstrap: np.ndarray, *,
                   gamma: float, lambda_: float) -> np.ndarray:
    """Generalised advantage estimates of consecutive episode chunks laid end to end.

    Args:
        rewards, values: per step, chunk after chunk.
        ends: one past each chunk's last step (increasing; the last equals ``len(rewards)``).
        bootstrap: per chunk, the value after its last step (0 for a terminated episode).

    The backward recursion runs once per step position from the chunk ends, over all chunks together.
    """
    n = len(rewards)
    starts = np.concatenate(([0], ends[:-1]))
    lengths = ends - starts
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    if (lengths < 1).any():
        raise ValueError("every chunk needs at least one step")
    next_values = np.empty(n, dtype=np.float64)
    next_values[:-1] = values[1:]
    next_values[ends - 1] = bootstrap
    residuals = rewards + gamma * next_values - values
    advantages = residuals.astype(np.float64)
    # steps_to_end[i] = 0 on a chunk's last step, 1 on the one before, ...
    steps_to_end = np.repeat(ends - 1, lengths) - np.arange(n)
    decay = gamma * lambda_
    for k in range(1, int(lengths.max())):
        rows = np.flatnonzero(steps_to_end == k)
        advantages[rows] += decay * advantages[rows + 1]
    return advantages.astype(np.float32)


@dataclass
class EpisodeChunks:
    """One module's episode chunks laid end to end as arrays: all a PPO learner reads of them.

    Built from RLlib episode objects (:meth:`from_episodes`) or directly by an env runner that samples
    whole batches (:class:`~parley.agents.training.rllib_envs.BatchedPartnerPoolEnvRunner`). ``len()`` is
    the number of steps, as for an RLlib episode.
    """

    module_id: str
    observations: dict[str, np.ndarray]  # per step: the observation each act was chosen on
    columns: dict[str, np.ndarray]  # per step: the EPISODE_COLUMNS
    rewards: np.ndarray  # per step
    ends: np.ndarray  # per chunk: one past its last step
    terminated: np.ndarray  # per chunk
    bootstrap_observations: dict[str, np.ndarray]  # per chunk that did not terminate: the state it reached

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def env_steps(self) -> int:
        return len(self)

    agent_steps = env_steps

    @classmethod
    def concatenate(cls, parts: list[EpisodeChunks]) -> EpisodeChunks:
        if len(parts) == 1:
            return parts[0]
        offsets = np.cumsum([0] + [len(p) for p in parts[:-1]])

        def join(field: str) -> dict[str, np.ndarray]:
            return {k: np.concatenate([getattr(p, field)[k] for p in parts]) for k in getattr(parts[0], field)}

        return cls(parts[0].module_id, join("observations"), join("columns"),
                   np.concatenate([p.rewards for p in parts]),
                   np.concatenate([p.ends + offset for p, offset in zip(parts, offsets)]),
                   np.concatenate([p.terminated for p in parts]), join("bootstrap_observations"))

    @classmethod
    def from_episodes(cls, module_id: str, episodes: list[Any]) -> EpisodeChunks:
        """The chunks of RLlib single-agent episodes (numpy'd), one concatenation per column."""
        lengths = np.fromiter((len(e) for e in episodes), dtype=np.int64, count=len(episodes))
        ends = np.cumsum(lengths)
        terminated = np.fromiter((e.is_terminated for e in episodes), dtype=bool, count=len(episodes))
        observations, rows, firsts = _join([e.observations for e in episodes], lengths)
        # a chunk's observations run one past its steps: the state its last step led to
        last = (firsts + lengths)[~terminated]
        columns = {Columns.ACTIONS: _column([e.actions for e in episodes], lengths)}
        for key in EPISODE_COLUMNS[1:]:
            columns[key] = _column([e.extra_model_outputs[key] for e in episodes], lengths)
        return cls(module_id, {k: v[rows] for k, v in observations.items()}, columns,
                   _column([e.rewards for e in episodes], lengths).astype(np.float64), ends, terminated,
                   {k: v[last] for k, v in observations.items()})


def _join(buffers: list[Any], lengths: np.ndarray) -> tuple[dict[Any, np.ndarray], np.ndarray, np.ndarray]:
    """The buffers' data (lookback included) concatenated per key, the rows of the chunks' own steps in it,
    and the row of each chunk's first step."""
    data = [b.data for b in buffers]
    if isinstance(data[0], dict):
        sizes = np.fromiter((len(next(iter(d.values()))) for d in data), dtype=np.int64, count=len(data))
        joined = {k: np.concatenate([d[k] for d in data]) for k in data[0]}
    else:
        sizes = np.fromiter((len(d) for d in data), dtype=np.int64, count=len(data))
        joined = {None: np.concatenate(data)}
    lookbacks = np.fromiter((b.lookback for b in buffers), dtype=np.int64, count=len(buffers))
    firsts = np.cumsum(sizes) - sizes + lookbacks
    rows = np.repeat(firsts - (np.cumsum(lengths) - lengths), lengths) + np.arange(int(lengths.sum()))
    return joined, rows, firsts


def _column(buffers: list[Any], lengths: np.ndarray) -> np.ndarray:
    joined, rows, _ = _join(buffers, lengths)
    return joined[None][rows]


class BatchedPPOLearnerConnector(ConnectorV2):
    """The whole PPO learner pipeline for (single- or multi-agent) episodes, over numpy arrays.

    Args:
        gamma, lambda_: PPO's discount and GAE lambda.
        modules: the modules to build train batches for (None: every module that stepped); the others'
            experience is dropped here instead of after the batch is built.
        proximal: for batches sampled with older weights than the learner's (overlapped sampling): PPO's
            clipping and KL term measure the update from the learner's weights at its start -- the
            batch's action-distribution inputs and log-probabilities are recomputed with them -- and
            each step's standardised advantage is weighted by the ratio of that probability of its act
            to the sampling one, truncated at :data:`MAX_PROXIMAL_WEIGHT` (decoupled PPO, Hilton et al.
            2022, with IMPALA's truncation). Batches sampled with the learner's weights are unchanged.
    """

    def __init__(self, input_observation_space=None, input_action_space=None, *, gamma: float, lambda_: float,
                 modules: Iterable[str] | None = None, proximal: bool = False, **kwargs: Any) -> None:
        super().__init__(input_observation_space, input_action_space, **kwargs)
        self.gamma = float(gamma)
        self.lambda_ = float(lambda_)
        self.modules = None if modules is None else frozenset(modules)
        self.proximal = bool(proximal)

    def __call__(self, *, rl_module, batch: dict[str, Any], episodes: list[Any], **kwargs: Any) -> dict[str, Any]:
        parts: dict[str, list[EpisodeChunks]] = defaultdict(list)
        chunks: dict[str, list[Any]] = defaultdict(list)
        for item in episodes:
            if isinstance(item, EpisodeChunks):
                if len(item) and (self.modules is None or item.module_id in self.modules):
                    parts[item.module_id].append(item)
                continue
            for episode in self.single_agent_episode_iterator([item], agents_that_stepped_only=False):
                module_id = episode.module_id or DEFAULT_MODULE_ID
                if len(episode) and (self.modules is None or module_id in self.modules):
                    if not episode.is_numpy:
                        episode.to_numpy()
                    chunks[module_id].append(episode)
        for module_id, module_chunks in chunks.items():
            parts[module_id].append(EpisodeChunks.from_episodes(module_id, module_chunks))
        for module_id, module_parts in parts.items():
            batch[module_id] = self.module_batch(rl_module[module_id], EpisodeChunks.concatenate(module_parts))
        return batch

    def module_batch(self, module, data: EpisodeChunks) -> dict[str, Any]:
        """One module's train batch (tensors on the module's device) from its episode chunks."""
        device = next(module.parameters()).device
        steps = len(data)
        with torch.no_grad():
            inputs = {k: np.concatenate([v, data.bootstrap_observations[k]]) for k, v in data.observations.items()}
            inputs = {Columns.OBS: {k: torch.from_numpy(v).to(device) for k, v in inputs.items()}}
            if self.proximal:  # one pass for the logits and the values
                out = module.forward_train(inputs)
                logits = out[Columns.ACTION_DIST_INPUTS][:steps]
                values = module.compute_values(inputs, embeddings=out.get(Columns.EMBEDDINGS))
            else:
                values = module.compute_values(inputs)
            values = values.cpu().numpy().astype(np.float64)
        bootstrap = np.zeros(len(data.ends))
        bootstrap[~data.terminated] = values[steps:]
        values = values[:steps]
        advantages = gae_advantages(data.rewards, values, data.ends, bootstrap, gamma=self.gamma,
                                    lambda_=self.lambda_)
        targets = (advantages + values).astype(np.float32)
        standardised = (advantages - advantages.mean()) / max(1e-4, float(advantages.std()))

        def tensor(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(array)).to(device)

        observations = {k: tensor(v) for k, v in data.observations.items()}
        columns = {k: tensor(v) for k, v in data.columns.items()}
        if self.proximal:
            columns, weights = proximal_columns(module, logits, columns)
            standardised = standardised * weights
        out = {Columns.OBS: observations, Postprocessing.ADVANTAGES: tensor(standardised.astype(np.float32)),
               Postprocessing.VALUE_TARGETS: tensor(targets)}
        out.update(columns)
        return out


#: Where the weight of a step's advantage under ``proximal`` is truncated (IMPALA's rho-bar).
MAX_PROXIMAL_WEIGHT = 1.0


def proximal_columns(module, logits: torch.Tensor, columns: dict[str, torch.Tensor]
                     ) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """The batch's columns with ``logits`` (``module``'s action-distribution inputs at its current weights)
    and their log-probabilities of the acts, and per step the truncated ratio of the act's probability under
    them to the probability it was sampled with."""
    with torch.no_grad():
        log_probs = module.get_train_action_dist_cls().from_logits(logits).logp(columns[Columns.ACTIONS])
    ratio = torch.exp(log_probs - columns[Columns.ACTION_LOGP]).cpu().numpy().astype(np.float64)
    return ({**columns, Columns.ACTION_DIST_INPUTS: logits, Columns.ACTION_LOGP: log_probs},
            np.minimum(ratio, MAX_PROXIMAL_WEIGHT))
