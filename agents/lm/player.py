"""The dialogue model as a player of the text game (:mod:`parley.envs.negotiation_text_v0`).

:class:`LanguageModelPlayer` reads a text observation, runs the model over the context and the dialogue
so far, and either samples the next utterance after ``YOU:`` (words until ``<eos>``; ``<selection>`` as
the first word ends the talk, allowed once the partner has spoken) or, once the talk is over, selects.
Its selection is the deal the talk reached as the corpus parser reads it
(:func:`~parley.envs.realiser.read_deal`: an agreed offer, or the other side's offer on the table when
the talk was ended on it) -- both sides of a game read the same talk, so their selections complement
each other; Lewis et al. give this part to a separate selection model that reads the whole dialogue --
and, when the parser reads no deal, the model's own pick after ``<selection>``, item by item, greedily
among the quantities that fit the counts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from parley.agents.lm.model import (
    EOS,
    ITEM_TOKENS,
    SELECTION,
    SPECIAL_TOKENS,
    DialogueLM,
    Vocabulary,
    context_tensor,
    load_language_model,
    tokenize,
)
from parley.envs.negotiation import NUM_ITEM_TYPES
from parley.envs.negotiation_text_v0 import (
    SELECTION_TOKEN,
    TextObservation,
    format_selection,
    parse_observation,
)
from parley.envs.realiser import read_deal

_SPEAKERS = ("YOU:", "THEM:")


class LanguageModelPlayer:
    """A :class:`~parley.envs.realiser.TextPolicy` that speaks with a :class:`DialogueLM`.

    :param temperature: sampling temperature of the words (Lewis et al. sample with 0.5)
    :param max_words: the longest utterance it writes
    :param read_deal: select the deal that the talk reached, read with the corpus parser
        (:func:`~parley.envs.realiser.read_deal`), and fall back to the model's own pick only when
        the parser reads no deal; False always selects with the model
    """

    def __init__(self, model: DialogueLM, vocab: Vocabulary, *, name: str = "lm", temperature: float = 0.5,
                 max_words: int = 30, seed: int | None = None, read_deal: bool = True) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.model = model.eval()
        self.vocab = vocab
        self.name = name
        self.temperature = float(temperature)
        self.max_words = int(max_words)
        self.read_deal = bool(read_deal)
        self.generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
        # Words it may say: everything but the special tokens, plus <eos> to stop.
        self._word_mask = torch.ones(len(vocab), dtype=torch.bool)
        for token in SPECIAL_TOKENS:
            if token != EOS:
                self._word_mask[vocab.index[token]] = False
        self._eos, self._selection = vocab.index[EOS], vocab.index[SELECTION]

    @classmethod
    def load(cls, path: str | Path, **kwargs) -> LanguageModelPlayer:
        """A player from a directory written by ``parley train-lm``."""
        model, vocab, _ = load_language_model(path)
        kwargs.setdefault("name", Path(path).name or "lm")
        return cls(model, vocab, **kwargs)

    def seed(self, seed: int | None) -> None:
        self.generator.manual_seed(0 if seed is None else int(seed))

    def _prefix(self, view: TextObservation) -> list[int]:
        tokens: list[str] = []
        for speaker, text in view.messages:
            if text == SELECTION_TOKEN:
                tokens += [_SPEAKERS[speaker], SELECTION]
                break
            tokens += [_SPEAKERS[speaker], *tokenize(text), EOS]
        return self.vocab.encode(tokens)

    @torch.no_grad()
    def reply(self, observation: str) -> str:
        view = parse_observation(observation)
        context = context_tensor(view.counts, view.values).unsqueeze(0)
        if view.selecting:
            return self._select(view, context)
        prefix = self._prefix(view) + [self.vocab.index["YOU:"]]
        logits, state = self.model(context, torch.tensor([prefix]))
        words: list[str] = []
        last = logits[0, -1]
        for step in range(self.max_words):
            allowed = self._word_mask.clone()
            if step == 0:
                # Ending the talk is allowed once the partner has said something to select on.
                allowed[self._selection] = any(speaker == 1 for speaker, _ in view.messages)
                allowed[self._eos] = False
            scores = torch.where(allowed, last / self.temperature, torch.tensor(-torch.inf))
            token = int(torch.multinomial(torch.softmax(scores, -1), 1, generator=self.generator))
            if token == self._selection:
                return SELECTION_TOKEN
            if token == self._eos:
                break
            words.append(self.vocab.words[token])
            logits, state = self.model(context, torch.tensor([[token]]), state)
            last = logits[0, -1]
        return " ".join(words) if words else SELECTION_TOKEN

    def _select(self, view: TextObservation, context: torch.Tensor) -> str:
        if self.read_deal:
            deal = read_deal(view)
            if deal is not None:
                return format_selection(deal)
        prefix = self._prefix(view)
        logits, state = self.model(context, torch.tensor([prefix]))
        last = logits[0, -1]
        keep = []
        for item in range(NUM_ITEM_TYPES):
            options = [self.vocab.index[ITEM_TOKENS[item * 5 + k]] for k in range(view.counts[item] + 1)]
            k = int(np.argmax([float(last[i]) for i in options]))
            keep.append(k)
            logits, state = self.model(context, torch.tensor([[options[k]]]), state)
            last = logits[0, -1]
        return format_selection(keep)

    def __repr__(self) -> str:
        return f"LanguageModelPlayer({self.name!r})"
