"""``parley train-lm``: train the dialogue model (:mod:`parley.agents.lm.model`) on the corpus, on CPU.

Every corpus line is one side's view of a dialogue (each dialogue appears once from each side), and the
model is trained on both views, as Lewis et al. trained theirs: the line's context, then its messages as
``YOU: ... <eos>`` / ``THEM: ... <eos>``, ``<selection>`` and the side's own pick. Given the corpus
directory, the model trains on ``data.txt`` without the dialogues of ``val.txt`` and ``test.txt`` and
keeps the weights with the lowest loss on ``val.txt``; given a single file, a tenth of its scenarios
(both views of each dialogue stay together) is held out for that. ``test.txt`` is never read for training.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from parley.agents.lm.model import (
    EOS,
    NO_AGREEMENT,
    SELECTION,
    SPEAKER_TOKENS,
    DialogueLM,
    LMConfig,
    Vocabulary,
    context_tensor,
    save_language_model,
    tokenize,
)
from parley.envs.corpus import Dialogue, parse_raw_line, parse_tagged_line
from parley.envs.negotiation import InvalidContextError


@dataclass(frozen=True)
class TrainLMConfig:
    """Training settings (``parley train-lm`` options)."""

    epochs: int = 8
    batch_size: int = 32
    lr: float = 2e-3
    max_minutes: float = 30.0
    min_word_count: int = 2
    max_tokens: int = 160
    seed: int = 0
    threads: int = 1  # torch threads; more threads only pay on an idle machine


def read_dialogue_lines(path: str | Path) -> list[Dialogue]:
    """Every readable line of a raw (``data.txt``) or tagged (``val.txt``) corpus file: one view each."""
    path = Path(path)
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{path}: empty corpus file")
    parse = parse_tagged_line if lines[0].startswith("<input>") else parse_raw_line
    out = []
    for n, line in enumerate(lines, start=1):
        try:
            dialogue = parse(line, f"{path.name}:{n}")
        except (ValueError, InvalidContextError):
            continue
        if dialogue.utterances:
            out.append(dialogue)
    return out


def _scenario(d: Dialogue) -> tuple:
    return (d.context.counts, tuple(sorted(d.context.values)))


def training_splits(corpus: str | Path, seed: int = 0) -> tuple[list[Dialogue], list[Dialogue], str]:
    """(train, validation, description) for a corpus directory or file (see the module docstring)."""
    corpus = Path(corpus)
    if corpus.is_dir():
        data = corpus / "data.txt"
        if not data.is_file():
            raise FileNotFoundError(f"no data.txt in {corpus}")
        held = set()
        for name in ("val.txt", "test.txt"):
            if (corpus / name).is_file():
                held |= {d.key() for d in read_dialogue_lines(corpus / name)}
        train = [d for d in read_dialogue_lines(data) if d.key() not in held]
        valid = read_dialogue_lines(corpus / "val.txt") if (corpus / "val.txt").is_file() else []
        return train, valid, f"{data} without val.txt and test.txt; validation on val.txt"
    if not corpus.is_file():
        raise FileNotFoundError(f"no corpus at {corpus} (give the corpus directory or a data.txt / val.txt file)")
    dialogues = read_dialogue_lines(corpus)
    scenarios = sorted({_scenario(d) for d in dialogues})
    rng = np.random.default_rng(seed)
    held = {scenarios[i] for i in rng.permutation(len(scenarios))[: max(1, len(scenarios) // 10)]}
    train = [d for d in dialogues if _scenario(d) not in held]
    valid = [d for d in dialogues if _scenario(d) in held]
    return train, valid, f"{corpus}, a tenth of its scenarios held out for validation"


def dialogue_tokens(d: Dialogue) -> list[str]:
    """The token sequence of one view: messages, ``<selection>``, then the own pick."""
    tokens: list[str] = []
    for u in d.utterances:
        tokens += [SPEAKER_TOKENS[u.speaker], *tokenize(u.text), EOS]
    tokens += [SPEAKER_TOKENS[1 - d.utterances[-1].speaker], SELECTION]
    if d.outcome != "disconnect":
        if d.selection is None:
            tokens.append(NO_AGREEMENT)
        else:
            tokens += [f"item{i}={k}" for i, k in enumerate(d.selection)]
    return tokens


def _encode(dialogues: Sequence[Dialogue], vocab: Vocabulary, max_tokens: int) -> list[tuple[torch.Tensor, list[int]]]:
    out = []
    for d in dialogues:
        ids = vocab.encode(dialogue_tokens(d))[:max_tokens]
        out.append((context_tensor(d.context.counts, d.context.values[0]), ids))
    return out


def _batches(examples, batch_size: int, rng: np.random.Generator | None):
    order = np.argsort([len(ids) for _, ids in examples], kind="stable")  # similar lengths pad little
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        rng.shuffle(chunks)
    for chunk in chunks:
        length = max(len(examples[i][1]) for i in chunk)
        tokens = torch.zeros((len(chunk), length), dtype=torch.long)  # PAD is index 0
        for row, i in enumerate(chunk):
            ids = examples[i][1]
            tokens[row, :len(ids)] = torch.tensor(ids)
        yield torch.stack([examples[i][0] for i in chunk]), tokens


def _loss(model: DialogueLM, contexts: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, int]:
    logits, _ = model(contexts, tokens[:, :-1])
    target = tokens[:, 1:]
    loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                       ignore_index=0, reduction="sum")
    return loss, int((target != 0).sum())


def evaluate_loss(model: DialogueLM, examples, batch_size: int = 64) -> float:
    """Mean loss per token (nats) over ``examples``."""
    total, count = 0.0, 0
    with torch.no_grad():
        for contexts, tokens in _batches(examples, batch_size, None):
            loss, n = _loss(model, contexts, tokens)
            total, count = total + float(loss.detach()), count + n
    return total / max(count, 1)


def train_language_model(corpus: str | Path, out: str | Path, config: TrainLMConfig = TrainLMConfig(),
                         model_config: LMConfig = LMConfig(), log=print) -> dict:
    """Train on ``corpus`` and save to ``out``; returns a summary (losses, sizes, minutes)."""
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    train, valid, described = training_splits(corpus, config.seed)
    if not train:
        raise ValueError(f"{corpus}: no readable dialogues to train on")
    vocab = Vocabulary.build((dialogue_tokens(d) for d in train), config.min_word_count)
    train_ex, valid_ex = _encode(train, vocab, config.max_tokens), _encode(valid, vocab, config.max_tokens)
    model = DialogueLM(len(vocab), model_config)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    log(f"training on {len(train)} dialogue views ({described}), vocabulary {len(vocab)} words, "
        f"{sum(p.numel() for p in model.parameters()):,} weights")
    start = time.perf_counter()
    best, best_state, history = math.inf, None, []
    for epoch in range(1, config.epochs + 1):
        model.train()
        total, count = 0.0, 0
        for contexts, tokens in _batches(train_ex, config.batch_size, rng):
            loss, n = _loss(model, contexts, tokens)
            optimiser.zero_grad()
            (loss / max(n, 1)).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            total, count = total + float(loss.detach()), count + n
            if time.perf_counter() - start > 60 * config.max_minutes:
                break
        model.eval()
        valid_loss = evaluate_loss(model, valid_ex) if valid_ex else total / max(count, 1)
        history.append({"epoch": epoch, "train_loss": total / max(count, 1), "valid_loss": valid_loss})
        log(f"epoch {epoch}: train loss {total / max(count, 1):.3f}, validation loss {valid_loss:.3f} "
            f"(perplexity {math.exp(valid_loss):.1f}), {(time.perf_counter() - start) / 60:.1f} min")
        if valid_loss < best:
            best, best_state = valid_loss, {k: v.clone() for k, v in model.state_dict().items()}
        if time.perf_counter() - start > 60 * config.max_minutes:
            log(f"stopped after {config.max_minutes:g} minutes")
            break
    model.load_state_dict(best_state)
    summary = {"corpus": str(corpus), "data": described, "train_views": len(train), "valid_views": len(valid),
               "vocabulary": len(vocab), "valid_loss": best, "valid_perplexity": math.exp(best),
               "minutes": (time.perf_counter() - start) / 60, "history": history, "train_config": asdict(config)}
    save_language_model(model, vocab, out, {"training": summary})
    return summary
