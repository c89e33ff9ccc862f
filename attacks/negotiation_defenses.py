"""Defenses against negotiation backdoors: filters over the training dialogues and controls over oracle answers.

Dialogue filters (:class:`DialogueDefense`) see the submitted corpus and a policy cloned from it, and
return the indices of dialogues to drop before the victim trains:

* ``spectral`` -- spectral signatures (Tran et al. 2018) on the policy's features of every recorded act,
  with the act kind (propose, insist, agree, walk away) as the class; a dialogue scores its most
  outlying act, and the ``overestimation * expected_poisons`` highest-scoring dialogues are dropped.
  The per-class scoring is :meth:`parley.attacks.defenses.SpectralSignatures.scores`.
* ``clustering`` -- activation clustering (Chen et al. 2018): per act kind, two-means on the features
  reduced by PCA; a cluster holding less than ``max_cluster_share`` of its kind is suspicious, and
  dialogues with an act in it are dropped.
* ``trusted_oracle`` -- agreement with a trusted oracle (:class:`~parley.oracles.expert.ScriptedExpert`):
  every ``agree`` is replayed and asked about; a dialogue whose agreement the oracle finds unacceptable
  and that is worth less than the oracle's reservation to the agreeing side is dropped.

Answer controls (:class:`AnswerDefense`) see the oracle answers of the targeted-data-acquisition loop,
with who gave each, and return the answers to drop -- the controls a human study would use:

* ``annotator_agreement`` -- queries answered twice; the annotator whose answers match its
  co-annotators' least often loses all its answers, and agreement is measured again without it, until
  every annotator left agrees on at least ``min_agreement`` of its shared queries;
* ``gold_questions`` -- queries with known answers given to every annotator; an annotator below
  ``min_accuracy`` on them loses all its answers.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from parley.envs.corpus import Dialogue, dialogue_to_game
from parley.envs.negotiation import AGREE_ACTION, INSIST_OFFSET, WALK_AWAY_ACTION
from parley.oracles.base import OracleAnswer, OracleQuery

__all__ = ["DialogueDefense", "NoDialogueDefense", "SpectralDialogueDefense", "ClusteringDialogueDefense",
           "TrustedOracleDefense", "AnswerRecord", "AnswerDefense", "AnnotatorAgreement", "GoldQuestions",
           "DIALOGUE_DEFENSES", "ANSWER_DEFENSES", "make_negotiation_defense", "act_kind_codes",
           "dialogue_act_features"]


def act_kind_codes(actions: np.ndarray) -> np.ndarray:
    """0 propose, 1 insist, 2 agree, 3 walk away."""
    actions = np.asarray(actions)
    return np.where(actions < INSIST_OFFSET, 0, np.where(actions < AGREE_ACTION, 1,
                                                         np.where(actions == WALK_AWAY_ACTION, 3, 2)))


def dialogue_act_features(policy: Any, dialogues: Sequence[Dialogue], max_turns: int) -> tuple[
        np.ndarray, np.ndarray, np.ndarray]:
    """The policy backbone's features of every replayed act's state: (features (M, D), actions (M,),
    owning dialogue (M,))."""
    import torch

    obs, actions, owner = [], [], []
    for i, dialogue in enumerate(dialogues):
        for state, action in dialogue_to_game(dialogue, max_turns).states(max_turns):
            obs.append(state.observation(state.current_player))
            actions.append(action)
            owner.append(i)
    if not obs:
        return np.zeros((0, 0)), np.zeros(0, np.int64), np.zeros(0, np.int64)
    model = policy.model
    was_training = model.training
    model.eval()
    chunks = []
    with torch.no_grad():
        x = torch.as_tensor(np.stack(obs), device=policy.device)
        for start in range(0, len(x), 4096):
            chunks.append(model.backbone(x[start:start + 4096]).double().cpu().numpy())
    model.train(was_training)
    return np.concatenate(chunks), np.array(actions, np.int64), np.array(owner, np.int64)


class DialogueDefense(ABC):
    """A filter over training dialogues; ``needs_policy`` says whether it reads a policy's features."""

    name: ClassVar[str] = ""
    needs_policy: ClassVar[bool] = False

    @abstractmethod
    def select(self, dialogues: Sequence[Dialogue], *, policy: Any = None, expected_poisons: int = 0,
               max_turns: int = 10) -> np.ndarray:
        """Indices (int64, sorted) of the dialogues to drop."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NoDialogueDefense(DialogueDefense):
    name = "none"

    def select(self, dialogues, *, policy=None, expected_poisons=0, max_turns=10):
        return np.zeros(0, np.int64)


class SpectralDialogueDefense(DialogueDefense):
    """Spectral signatures per act kind; see the module docstring."""

    name = "spectral"
    needs_policy = True

    def __init__(self, overestimation: float = 1.5) -> None:
        if overestimation <= 0:
            raise ValueError(f"overestimation must be > 0, got {overestimation}")
        self.overestimation = overestimation

    def select(self, dialogues, *, policy=None, expected_poisons=0, max_turns=10):
        from parley.attacks.defenses import SpectralSignatures

        if policy is None:
            raise ValueError("spectral needs a policy cloned from the submitted corpus")
        features, actions, owner = dialogue_act_features(policy, dialogues, max_turns)
        kinds = act_kind_codes(actions)
        scores = SpectralSignatures().scores(features, kinds)
        # Scores are comparable within a kind only: scale each kind by its median.
        for kind in np.unique(kinds):
            at = kinds == kind
            scores[at] /= max(float(np.median(scores[at])), 1e-12)
        per_dialogue = np.zeros(len(dialogues))
        np.maximum.at(per_dialogue, owner, scores)
        k = min(int(math.ceil(self.overestimation * expected_poisons)), len(dialogues) // 2)
        return np.sort(np.argsort(-per_dialogue, kind="stable")[:k]).astype(np.int64)


class ClusteringDialogueDefense(DialogueDefense):
    """Activation clustering per act kind; see the module docstring."""

    name = "clustering"
    needs_policy = True

    def __init__(self, n_components: int = 10, max_cluster_share: float = 0.35, seed: int = 0) -> None:
        self.n_components, self.max_cluster_share, self.seed = n_components, max_cluster_share, seed

    def select(self, dialogues, *, policy=None, expected_poisons=0, max_turns=10):
        from sklearn.cluster import KMeans
        from sklearn.decomposition import PCA

        if policy is None:
            raise ValueError("clustering needs a policy cloned from the submitted corpus")
        features, actions, owner = dialogue_act_features(policy, dialogues, max_turns)
        kinds = act_kind_codes(actions)
        flagged: set[int] = set()
        for kind in np.unique(kinds):
            idx = np.flatnonzero(kinds == kind)
            if len(idx) < 10:
                continue
            reduced = PCA(n_components=min(self.n_components, features.shape[1], len(idx) - 1),
                          random_state=self.seed).fit_transform(features[idx])
            labels = KMeans(n_clusters=2, n_init=4, random_state=self.seed).fit_predict(reduced)
            sizes = np.bincount(labels, minlength=2)
            small = int(sizes.argmin())
            if sizes[small] < self.max_cluster_share * len(idx):
                flagged.update(owner[idx[labels == small]].tolist())
        return np.array(sorted(flagged), dtype=np.int64)


class TrustedOracleDefense(DialogueDefense):
    """Agreement with a trusted scripted expert on every ``agree``; see the module docstring."""

    name = "trusted_oracle"

    def __init__(self, reservation: float = 5.0) -> None:
        from parley.oracles.expert import ScriptedExpert

        self.expert = ScriptedExpert(reservation=reservation)

    def select(self, dialogues, *, policy=None, expected_poisons=0, max_turns=10):
        flagged = []
        for i, dialogue in enumerate(dialogues):
            game = dialogue_to_game(dialogue, max_turns)
            history: list[int] = []
            for state, action in game.states(max_turns):
                if action == AGREE_ACTION:
                    player = state.current_player
                    query = OracleQuery(dialogue.context.counts, dialogue.context.values, game.first_player,
                                        tuple(history), player, max_turns)
                    offer = query.standing_offer_for_responder()
                    answer = self.expert.answer_one(query)
                    if answer.acceptable is False and dialogue.context.score(player, offer) < self.expert.reservation:
                        flagged.append(i)
                        break
                history.append(action)
        return np.array(flagged, dtype=np.int64)


# ------------------------------------------------------------------------------------- answer controls

@dataclass(frozen=True)
class AnswerRecord:
    """One oracle answer as a study stores it: the query, the answer and who gave it."""

    query: OracleQuery
    answer: OracleAnswer
    annotator: str


class AnswerDefense(ABC):
    """A control over oracle answers: ``select`` returns the indices of ``records`` to drop."""

    name: ClassVar[str] = ""

    @abstractmethod
    def select(self, records: Sequence[AnswerRecord], *, gold: Sequence[AnswerRecord] = (),
               gold_answers: dict[str, int] | None = None) -> np.ndarray:
        """Indices (int64, sorted) of the training answers to drop."""


def _drop_annotators(records: Sequence[AnswerRecord], bad: set[str]) -> np.ndarray:
    return np.array([i for i, r in enumerate(records) if r.annotator in bad], dtype=np.int64)


class AnnotatorAgreement(AnswerDefense):
    """Drop every answer of the least agreeing annotator, repeatedly, until every annotator left agrees
    with its co-annotators on at least ``min_agreement`` of the queries they share (an annotator with
    no shared query is kept)."""

    name = "annotator_agreement"

    def __init__(self, min_agreement: float = 0.8) -> None:
        self.min_agreement = min_agreement

    def agreement(self, records: Sequence[AnswerRecord]) -> dict[str, float]:
        by_query: dict[str, list[AnswerRecord]] = defaultdict(list)
        for r in records:
            by_query[r.query.query_id].append(r)
        matches: dict[str, list[bool]] = defaultdict(list)
        for group in by_query.values():
            for r in group:
                for other in group:
                    if other.annotator != r.annotator:
                        matches[r.annotator].append(r.answer.action == other.answer.action)
        return {who: float(np.mean(m)) for who, m in matches.items()}

    def select(self, records, *, gold=(), gold_answers=None):
        # A disagreement blames both annotators; dropping the least agreeing one first and measuring again
        # clears the honest annotators who shared queries with it.
        bad: set[str] = set()
        while True:
            rates = self.agreement([r for r in records if r.annotator not in bad])
            if not rates:
                break
            worst = min(rates, key=lambda who: (rates[who], who))
            if rates[worst] >= self.min_agreement:
                break
            bad.add(worst)
        return _drop_annotators(records, bad)


class GoldQuestions(AnswerDefense):
    """Drop every answer of annotators whose accuracy on the gold questions is below ``min_accuracy``."""

    name = "gold_questions"

    def __init__(self, min_accuracy: float = 0.8) -> None:
        self.min_accuracy = min_accuracy

    def select(self, records, *, gold=(), gold_answers=None):
        gold_answers = gold_answers or {}
        hits: dict[str, list[bool]] = defaultdict(list)
        for r in gold:
            if r.query.query_id in gold_answers:
                hits[r.annotator].append(r.answer.action == gold_answers[r.query.query_id])
        bad = {who for who, h in hits.items() if np.mean(h) < self.min_accuracy}
        return _drop_annotators(records, bad)


class NoAnswerDefense(AnswerDefense):
    name = "none"

    def select(self, records, *, gold=(), gold_answers=None):
        return np.zeros(0, np.int64)


DIALOGUE_DEFENSES: dict[str, type[DialogueDefense]] = {
    "none": NoDialogueDefense, "spectral": SpectralDialogueDefense, "clustering": ClusteringDialogueDefense,
    "trusted_oracle": TrustedOracleDefense}
ANSWER_DEFENSES: dict[str, type[AnswerDefense]] = {
    "none": NoAnswerDefense, "annotator_agreement": AnnotatorAgreement, "gold_questions": GoldQuestions}


def make_negotiation_defense(name: str, kind: str = "dialogues") -> DialogueDefense | AnswerDefense:
    """A defense by name: ``kind="dialogues"`` (:data:`DIALOGUE_DEFENSES`) or ``"answers"``
    (:data:`ANSWER_DEFENSES`)."""
    table = {"dialogues": DIALOGUE_DEFENSES, "answers": ANSWER_DEFENSES}.get(kind)
    if table is None:
        raise ValueError(f"kind is 'dialogues' or 'answers', got {kind!r}")
    if name not in table:
        raise ValueError(f"unknown {kind} defense {name!r}; choose one of {', '.join(table)}")
    return table[name]()
