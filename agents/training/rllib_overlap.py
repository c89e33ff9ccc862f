"""PPO whose remote env runners sample the next train batch while the learner updates on this one.

RLlib's PPO samples a batch, updates on it, then samples again: with the learner in the driver, each
step waits for the other and one core idles. :class:`OverlappedPPO` keeps one sample request in flight
per remote env runner. An iteration takes the batch that request returns, sends the next request (with
the learner's current weights) and updates on the taken batch while the env runners sample. The batch
of update k is therefore sampled with the weights from before update k-1 -- one update behind, as in
APPO and IMPALA. Measured from those sampling probabilities, PPO's ratio and KL term would start each
update already one update away from 1 and 0 (the clip would cut part of every update, and the adaptive
KL coefficient would grow); the batched learner connector's ``proximal`` mode measures them from
the learner's weights at the start of the update instead and weights the advantages by the truncated
ratio to the sampling probabilities (see
:class:`~parley.agents.training.rllib_connector.BatchedPPOLearnerConnector`).

Counting: an iteration reports the env steps (and episode metrics) of the batch it trained on; the
request still in flight when training stops is dropped uncounted. A restored algorithm starts with
nothing in flight, so its first iteration samples before it updates, as PPO does.
"""

from __future__ import annotations

import ray
from ray.rllib.algorithms.ppo import PPO
from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_RL_MODULE
from ray.rllib.utils.metrics import (
    ALL_MODULES,
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    NUM_MODULE_STEPS_TRAINED_LIFETIME,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TIMERS,
)

#: The tag of the sample requests in the env runner group's in-flight bookkeeping.
SAMPLE_REQUEST = "overlapped_sample"


def sample_with_weights(env_runner, state: dict):
    """Run on an env runner: load ``state`` (the learner's module weights), sample one batch and return it
    with the env runner's metrics, as RLlib's synchronous sampling returns them."""
    env_runner.set_state(state)
    return env_runner.sample(), env_runner.get_metrics()


class OverlappedPPO(PPO):
    """PPO sampling on the remote env runners during the learner update (see the module docstring).

    Without remote env runners it is RLlib's PPO. ``overlapped_updates`` counts the updates that ran
    while a sample request was in flight.
    """

    overlapped_updates: int = 0

    def training_step(self) -> None:
        runners = self.env_runner_group
        if runners.num_healthy_remote_env_runners() == 0:
            return super().training_step()
        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            if runners.num_in_flight_async_reqs(SAMPLE_REQUEST) == 0:  # the first iteration, or after a restore
                self._request_samples()
            # timeout None: wait for every request; a failed env runner's result is dropped (or raised) by RLlib
            results = [result for _, result in runners.fetch_ready_async_reqs(tags=SAMPLE_REQUEST,
                                                                              timeout_seconds=None)]
        if not results:
            return
        self.metrics.aggregate([metrics for _, metrics in results], key=ENV_RUNNER_RESULTS)
        episodes = [episode for sampled, _ in results for episode in sampled]
        self._request_samples()  # samples the next batch while the learner updates on this one
        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            if runners.num_in_flight_async_reqs(SAMPLE_REQUEST) > 0:
                self.overlapped_updates += 1
            learner_results = self.learner_group.update(
                episodes=episodes,
                timesteps={
                    NUM_ENV_STEPS_SAMPLED_LIFETIME: self.metrics.peek(
                        (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME)),
                    NUM_MODULE_STEPS_TRAINED_LIFETIME: self.metrics.peek(
                        (LEARNER_RESULTS, ALL_MODULES, NUM_MODULE_STEPS_TRAINED_LIFETIME), default=0),
                },
                num_epochs=self.config.num_epochs,
                minibatch_size=self.config.minibatch_size,
                shuffle_batch_per_epoch=self.config.shuffle_batch_per_epoch,
            )
            self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)

    def _request_samples(self) -> None:
        """Send every healthy remote env runner a sample request carrying the learner's current weights."""
        with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            state = self.learner_group.get_state(components=[f"{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}"],
                                                 inference_only=True)[COMPONENT_LEARNER]
            # without a weights sequence number the env runner always loads them (it skips numbers it has seen)
            weights = ray.put({COMPONENT_RL_MODULE: state[COMPONENT_RL_MODULE]})
            self.env_runner_group.foreach_env_runner_async(sample_with_weights, tag=SAMPLE_REQUEST,
                                                           kwargs={"state": weights})
