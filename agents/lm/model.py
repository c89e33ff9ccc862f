"""A small utterance model of Deal-or-No-Deal dialogues, after Lewis et al.'s (2017) supervised model.

A word-level GRU language model conditioned on the speaker's context. The context (count and value of
each item type) is embedded, sets the GRU's initial state and is fed beside every word; the GRU reads
the dialogue from one side's view -- ``YOU: i want the hats <eos> THEM: deal <eos> <selection>`` -- and
predicts the next token. After ``<selection>`` it writes what that side keeps as ``item0=k item1=k
item2=k`` (the corpus's output format), so the same network talks and selects, as in the corpus lines
it is trained on.

A saved model is a directory with ``lm.json`` (the vocabulary and the settings) and ``lm.pt`` (the weights).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from parley.envs.negotiation import MAX_ITEM_COUNT, NUM_ITEM_TYPES, VALUE_TOTAL

PAD, UNK, EOS, SELECTION, NO_AGREEMENT = "<pad>", "<unk>", "<eos>", "<selection>", "<no_agreement>"
SPEAKER_TOKENS = ("YOU:", "THEM:")
ITEM_TOKENS = tuple(f"item{i}={k}" for i in range(NUM_ITEM_TYPES) for k in range(MAX_ITEM_COUNT + 1))
SPECIAL_TOKENS = (PAD, UNK, EOS, SELECTION, NO_AGREEMENT, *SPEAKER_TOKENS, *ITEM_TOKENS)
CONFIG_FILE, WEIGHTS_FILE = "lm.json", "lm.pt"
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
    """Lower-cased words and punctuation marks, as the corpus writes them ("i'd like 2 books .")."""
    return _WORD.findall(text.lower().replace("’", "'"))


@dataclass(frozen=True)
class LMConfig:
    """Sizes of the network."""

    embed_dim: int = 64
    context_dim: int = 32
    hidden_dim: int = 128


class Vocabulary:
    """Words of the training split seen at least ``min_count`` times, after the special tokens."""

    def __init__(self, words: Sequence[str]) -> None:
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        self.unk = self.index[UNK]

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], min_count: int = 2) -> Vocabulary:
        counts = Counter(w for s in sentences for w in s if w not in SPECIAL_TOKENS)
        return cls([*SPECIAL_TOKENS, *sorted(w for w, n in counts.items() if n >= min_count)])

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return [self.index.get(t, self.unk) for t in tokens]

    def __len__(self) -> int:
        return len(self.words)


def context_tensor(counts: Sequence[int], values: Sequence[int]) -> torch.Tensor:
    """(6,) long: count, value for book, hat and ball."""
    return torch.tensor([x for pair in zip(counts, values) for x in pair], dtype=torch.long)


class DialogueLM(nn.Module):
    """GRU language model over dialogue tokens, conditioned on (counts, own values)."""

    def __init__(self, vocab_size: int, config: LMConfig = LMConfig()) -> None:
        super().__init__()
        self.config = config
        self.count_embed = nn.Embedding(MAX_ITEM_COUNT + 1, config.context_dim)
        self.value_embed = nn.Embedding(VALUE_TOTAL + 1, config.context_dim)
        self.item_embed = nn.Parameter(torch.zeros(NUM_ITEM_TYPES, config.context_dim))
        self.context_mix = nn.Sequential(nn.Linear(NUM_ITEM_TYPES * config.context_dim, config.context_dim), nn.Tanh())
        self.init_state = nn.Linear(config.context_dim, config.hidden_dim)
        self.word_embed = nn.Embedding(vocab_size, config.embed_dim)
        self.gru = nn.GRU(config.embed_dim + config.context_dim, config.hidden_dim, batch_first=True)
        self.out = nn.Linear(config.hidden_dim, vocab_size)

    def encode_context(self, contexts: torch.Tensor) -> torch.Tensor:
        """(B, 6) count/value pairs -> (B, context_dim)."""
        counts, values = contexts[:, 0::2], contexts[:, 1::2]
        per_item = self.count_embed(counts) + self.value_embed(values) + self.item_embed
        return self.context_mix(per_item.flatten(1))

    def forward(self, contexts: torch.Tensor, tokens: torch.Tensor,
                state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, T, V) for the token after each of ``tokens`` (B, T), and the GRU state."""
        ctx = self.encode_context(contexts)
        if state is None:
            state = torch.tanh(self.init_state(ctx)).unsqueeze(0)
        words = self.word_embed(tokens)
        inputs = torch.cat([words, ctx.unsqueeze(1).expand(-1, words.shape[1], -1)], dim=-1)
        hidden, state = self.gru(inputs, state)
        return self.out(hidden), state


def is_language_model_dir(path: str | Path) -> bool:
    """Whether ``path`` is a directory written by :func:`save_language_model`."""
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def save_language_model(model: DialogueLM, vocab: Vocabulary, out: str | Path, extra: dict | None = None) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"format": "parley-dialogue-lm-1", "config": asdict(model.config), "vocabulary": vocab.words,
            **(extra or {})}
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=1))
    torch.save(model.state_dict(), out / WEIGHTS_FILE)
    return out


def load_language_model(path: str | Path) -> tuple[DialogueLM, Vocabulary, dict]:
    """The model, its vocabulary and the saved metadata of a directory written by ``parley train-lm``."""
    path = Path(path)
    if not is_language_model_dir(path):
        raise FileNotFoundError(f"{path} is not a language model directory (expected {CONFIG_FILE} and {WEIGHTS_FILE}; "
                                "write one with `parley train-lm --corpus PATH --out DIR`)")
    meta = json.loads((path / CONFIG_FILE).read_text())
    vocab = Vocabulary(meta["vocabulary"])
    model = DialogueLM(len(vocab), LMConfig(**meta["config"]))
    model.load_state_dict(torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    model.eval()
    return model, vocab, meta
