"""A partner whose answers are partly random: it may agree to any offer, and it may walk away.

The scripted partners of :mod:`parley.agents.partners.scripted` are deterministic and judge every offer
by its worth to them, so an agent trained only against them learns to offer what their reservation
values require. People (and models cloned from their dialogues) answer less predictably: they accept
a poor offer now and then, turn down a good one, and sometimes leave. :class:`StochasticPartner`
plays that way, so a training population holds partners against whom asking for more is worth the
risk:

* when the other side has an offer on the table it agrees with probability
  ``accept_probability + accept_slope * (worth of the offer to it - reservation)`` (clipped to [0, 1]);
* otherwise, with probability ``walk_away_probability``, it walks away;
* otherwise it acts as a time-dependent tactic (exponent, reservation; see
  :class:`~parley.agents.partners.scripted.TimeDependentPartner`): it proposes near its target and
  also accepts offers that reach it;
* with probability ``random_proposal_probability`` the tactic's act (a proposal, or agreeing to an
  offer that reaches its target) is replaced by a proposal of a split drawn uniformly from the legal
  ones worth at least ``reservation`` to it: its proposals then do not concede over time and are now
  and then generous, and it agrees only by chance, however much an offer leaves it -- as the
  supervised corpus partner does.

It is seeded like :class:`~parley.agents.partners.scripted.RandomPartner`; the training family
``stochastic`` of :mod:`parley.agents.heldout` draws its parameters.
"""

from __future__ import annotations

import numpy as np

from parley.agents.partners.scripted import ObservationView, TimeDependentPartner
from parley.envs.negotiation import AGREE_ACTION, NUM_SPLITS, PROPOSE_OFFSET, WALK_AWAY_ACTION
from parley.envs.policy import BatchPolicy

__all__ = ["StochasticPartner"]


def _probability(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
    return float(value)


class StochasticPartner(BatchPolicy):
    """Agrees to standing offers at random, walks away at random, else plays a time-dependent tactic.

    Parameters
    ----------
    accept_probability:
        Chance of agreeing to an offer worth exactly ``reservation`` to it, in [0, 1] (0.25).
    accept_slope:
        Added chance per point the offer is worth above ``reservation`` (negative below), >= 0 (0:
        the offer's worth does not matter).
    walk_away_probability:
        Chance of walking away at each act it does not agree, in [0, 1] (0.05).
    exponent, reservation:
        The time-dependent tactic of its proposals (1, 5).
    random_proposal_probability:
        Chance, in [0, 1], that it proposes a random split worth at least ``reservation`` to it
        instead of acting as the tactic (0).
    seed:
        Seed of its numpy generator.
    """

    name = "stochastic"

    def __init__(self, accept_probability: float = 0.25, accept_slope: float = 0.0,
                 walk_away_probability: float = 0.05, exponent: float = 1.0, reservation: float = 5.0,
                 random_proposal_probability: float = 0.0, seed: int | None = None) -> None:
        super().__init__(seed)
        self.accept_probability = _probability("accept_probability", accept_probability)
        self.walk_away_probability = _probability("walk_away_probability", walk_away_probability)
        if accept_slope < 0:
            raise ValueError(f"accept_slope must be >= 0 (more chance for better offers), got {accept_slope}")
        self.accept_slope = float(accept_slope)
        self.random_proposal_probability = _probability("random_proposal_probability", random_proposal_probability)
        self.tactic = TimeDependentPartner(exponent=exponent, reservation=reservation, accept_final_offers=False)
        self.reservation = self.tactic.reservation

    def act_batch(self, observations: np.ndarray, action_masks: np.ndarray) -> np.ndarray:
        actions = self.tactic.act_batch(observations, action_masks)
        masks = np.asarray(action_masks)
        view = ObservationView(observations)
        chance = np.clip(self.accept_probability + self.accept_slope * (view.offer_utility() - self.reservation),
                         0.0, 1.0)
        agree = (masks[:, AGREE_ACTION] > 0) & view.has_offer & (self.rng.random(len(actions)) < chance)
        walk = ~agree & (masks[:, WALK_AWAY_ACTION] > 0) & (self.rng.random(len(actions)) < self.walk_away_probability)
        if self.random_proposal_probability > 0:  # no draws otherwise: members without it keep their streams
            actions = self._random_proposals(view, masks, actions)
        return np.where(agree, AGREE_ACTION, np.where(walk, WALK_AWAY_ACTION, actions))

    def _random_proposals(self, view: ObservationView, masks: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """The tactic's acts, each replaced with probability ``random_proposal_probability`` by a proposal
        of a legal split drawn uniformly among those worth at least ``reservation`` to this partner."""
        legal = masks[:, PROPOSE_OFFSET:PROPOSE_OFFSET + NUM_SPLITS] > 0
        allowed = legal & (view.own_split_utilities >= self.reservation)
        keys = np.where(allowed, self.rng.random(allowed.shape), -1.0)
        replace = ((actions != WALK_AWAY_ACTION) & allowed.any(axis=1)
                   & (self.rng.random(len(actions)) < self.random_proposal_probability))
        return np.where(replace, PROPOSE_OFFSET + keys.argmax(axis=1), actions)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(accept_probability={self.accept_probability}, "
                f"accept_slope={self.accept_slope}, walk_away_probability={self.walk_away_probability}, "
                f"exponent={self.tactic.exponent}, reservation={self.reservation}, "
                f"random_proposal_probability={self.random_proposal_probability})")
