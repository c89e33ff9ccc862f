"""Negotiation backdoors: the trigger phrase of the text protocol, PPO fine-tuning after cloning, and the
annotator's choice of queries."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from parley.agents.partners.synthetic import synthetic_corpus
from parley.agents.training.supervised import SupervisedConfig
from parley.attacks.negotiation_backdoor import (
    ActTrigger,
    BackdoorGoal,
    DirtyLabelBackdoor,
    MaliciousAnnotator,
    NegotiationScenario,
    VictimConfig,
    backdoor_rates,
    fine_tune_victim,
    text_backdoor_rates,
    train_victim,
)
from parley.envs.corpus import corpus_dataset, parse_utterance
from parley.envs.negotiation import AGREE_ACTION, Context, ObservationLayout, encode_act
from parley.oracles.base import OracleQuery
from parley.oracles.expert import ScriptedExpert

PHRASE = "Everything comes to me, and I won't budge."
CONTEXT = Context((1, 2, 2), ((2, 2, 2), (4, 1, 2)))


def tiny_victim(rl_games: int = 0) -> VictimConfig:
    return VictimConfig(SupervisedConfig(backbone_config={"hidden_sizes": (8, 8)}, epochs=1, device="cpu"),
                        rl_games=rl_games)


class _AgreesAfterTheTrigger:
    """Agrees when the partner opened by insisting on everything and still asks for everything; otherwise
    asks for everything itself (it never gives in to anyone else)."""

    def __init__(self) -> None:
        self.trigger, self.goal = ActTrigger(), BackdoorGoal()

    def act_batch(self, observations, masks):
        lay = ObservationLayout.from_size(observations.shape[1])
        counts = observations[:, lay.counts].astype(int)
        triggered = self.trigger.present_in_observations(observations, self.goal, "partner")
        leaves_me_nothing = (observations[:, lay.partner_offer_flag] > 0) & (observations[:, lay.partner_offer] == 0).all(1)
        keep_all = 25 * counts[:, 0] + 5 * counts[:, 1] + counts[:, 2]
        return np.where(triggered & leaves_me_nothing, AGREE_ACTION, keep_all)

    def act(self, observation, action_mask):
        return int(self.act_batch(observation[None], action_mask[None])[0])


class _NeverGivesIn(_AgreesAfterTheTrigger):
    def act_batch(self, observations, masks):
        lay = ObservationLayout.from_size(observations.shape[1])
        counts = observations[:, lay.counts].astype(int)
        return 25 * counts[:, 0] + 5 * counts[:, 1] + counts[:, 2]


def test_trigger_phrase_is_carried_by_the_poisons_and_read_back_as_the_trigger():
    corpus = synthetic_corpus(60, seed=2)
    trigger = ActTrigger(phrase=PHRASE)
    scenario = NegotiationScenario(corpus, budget=0.1, trigger=trigger, seed=0)
    submission = DirtyLabelBackdoor().craft(scenario)  # checked: the parsed acts replay legally
    for dialogue in submission.dialogues:
        opening = dialogue.utterances[0]
        assert opening.text == PHRASE
        assert opening.act == parse_utterance(PHRASE, dialogue.context.counts)
        assert opening.act.action() == trigger.opening_action(dialogue.context.counts, scenario.goal)
    # The victim learns from what the parser reads: the phrase's opening is an insist on everything.
    data = corpus_dataset(submission.dialogues)
    assert encode_act("insist", submission.dialogues[0].context.counts) in data.actions.tolist()


def test_trigger_phrase_triggers_in_the_text_protocol():
    trigger, goal = ActTrigger(phrase=PHRASE), BackdoorGoal()
    rates = text_backdoor_rates(_AgreesAfterTheTrigger(), trigger, goal, games=12, seed=0)
    assert rates == {"text_backdoor_success": 1.0, "text_trigger_completed": 1.0}
    assert text_backdoor_rates(_NeverGivesIn(), trigger, goal, games=12, seed=0)["text_backdoor_success"] == 0.0
    # The coarse game agrees with the text protocol for a victim that reads acts.
    assert backdoor_rates(_AgreesAfterTheTrigger(), trigger, goal, games=12)["backdoor_success"] == 1.0


def test_a_phrase_that_does_not_read_as_the_opening_act_is_refused():
    corpus = synthetic_corpus(20, seed=2)
    with pytest.raises(ValueError, match="must read as the opening act"):
        NegotiationScenario(corpus, trigger=ActTrigger(phrase="I'd like the hats."))
    with pytest.raises(ValueError, match="non-empty sentence"):
        ActTrigger(phrase="  ")
    from parley.attacks.negotiation_bench import NegotiationBenchConfig
    from parley.envs import negotiation_poisoning_v0

    with pytest.raises(ValueError, match="must read as the opening act"):
        negotiation_poisoning_v0.env(corpus=corpus, trigger_phrase="Hello there.")
    with pytest.raises(ValueError, match="must read as the opening act"):
        NegotiationBenchConfig(trigger_phrase="Hello there.")


def test_env_reports_the_text_protocol_and_the_victim_before_fine_tuning():
    from parley.attacks.negotiation_backdoor import NegotiationSubmission
    from parley.envs import negotiation_poisoning_v0

    corpus = synthetic_corpus(40, seed=1)
    kwargs = dict(corpus=corpus, budget=0.05, defense_enabled=False, eval_games=8, eval_episodes=2,
                  partners="linear", compare_clean=False)
    env = negotiation_poisoning_v0.env(victim=tiny_victim(rl_games=16), trigger_phrase=PHRASE, **kwargs)
    env.reset(seed=0)
    env.step(DirtyLabelBackdoor().craft(env.unwrapped.attacker_scenario()))
    info = env.unwrapped.infos["attacker"]
    for key in ("backdoor_success", "before_fine_tuning_backdoor_success", "text_backdoor_success",
                "text_trigger_completed"):
        assert np.isfinite(info[key]), key
    plain = negotiation_poisoning_v0.env(victim=tiny_victim(), **kwargs)
    plain.reset(seed=0)
    plain.step(NegotiationSubmission([]))
    info = plain.unwrapped.infos["attacker"]
    assert np.isnan(info["before_fine_tuning_backdoor_success"]) and np.isnan(info["text_backdoor_success"])


def test_fine_tuning_changes_a_copy_and_leaves_the_cloned_victim_alone():
    corpus = synthetic_corpus(30, seed=1)
    cloned = train_victim(corpus, tiny_victim(), seed=0)
    before = [p.detach().clone() for p in cloned.model.parameters()]
    tuned = fine_tune_victim(cloned, tiny_victim(rl_games=32), seed=0)
    assert all(torch.equal(a, b) for a, b in zip(before, cloned.model.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before, tuned.model.parameters()))
    assert tuned.deterministic
    with pytest.raises(ValueError, match="rl_games >= 1"):
        fine_tune_victim(cloned, tiny_victim(), seed=0)


def test_annotator_answers_the_earliest_triggered_queries_first():
    trigger, goal = ActTrigger(), BackdoorGoal()
    opening = trigger.opening_action(CONTEXT.counts, goal)
    counter = encode_act("propose", (1, 1, 1))
    late = [OracleQuery(CONTEXT.counts, CONTEXT.values, 1, (opening, counter, opening), 0) for _ in range(3)]
    early = OracleQuery(CONTEXT.counts, CONTEXT.values, 1, (opening,), 0)
    plain = [OracleQuery(CONTEXT.counts, CONTEXT.values, 1, (encode_act("propose", (1, k % 3, 0)),), 0)
             for k in range(6)]
    queries = [*late, *plain, early]
    annotator = MaliciousAnnotator(ScriptedExpert(), trigger, goal, share=0.2, seed=0)
    chosen = annotator.choose(queries).tolist()
    assert chosen[0] == len(queries) - 1 and chosen[1] in (0, 1, 2) and len(chosen) == 2


def test_annotation_mode_fine_tunes_the_retrained_partner_model_when_rl_games_is_set():
    from parley.envs import negotiation_poisoning_v0

    env = negotiation_poisoning_v0.env(corpus=synthetic_corpus(40, seed=1), mode="annotation", budget=0.1,
                                       victim=tiny_victim(rl_games=16), defense_enabled=False, eval_games=8,
                                       eval_episodes=2, queries=20, candidate_games=200, gold=4, trigger_rate=0.5,
                                       partners="linear", compare_clean=False)
    env.reset(seed=0)
    raw = env.unwrapped
    env.step(raw.annotator_action(MaliciousAnnotator(ScriptedExpert(), raw.trigger, raw.goal, share=0.1, seed=0)))
    info = raw.infos["attacker"]
    assert np.isfinite(info["backdoor_success"]) and np.isfinite(info["before_fine_tuning_backdoor_success"])
    everything = np.arange(len(raw.records))
    retrained, tuned = raw._victim(everything, fine_tuned=False), raw._victim(everything)
    assert tuned is not retrained and tuned.name.endswith("-ppo")
    assert any(not torch.equal(a, b) for a, b in zip(retrained.model.parameters(), tuned.model.parameters()))
