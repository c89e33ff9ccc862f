"""Study games in the corpus format of Lewis et al. (2017), ``data.txt``, so studies feed the corpus tools.

Each finished game with at least one act becomes two lines, one from each side, as in the corpus::

    <counts and YOU's values> YOU: i'd like 2 books ; you take the rest . <eos> THEM: deal . <eos>
        YOU: <selection> item0=2 item1=0 item2=0 <eos> reward=8 agree <counts and THEM's values>

The person is YOU in the first line and the agent in the second. Utterances are the acts in words
(:func:`~parley.envs.negotiation.verbalize_act`, lower-cased and tokenised as the corpus is), which the
corpus parser reads back to the same acts; the participants' free-text messages are left out (they are in
the transcripts export). A text-protocol game is written as it was said: its messages (lower-cased and
tokenised), ``<selection>`` from the side that ended the talk (the side after the last speaker when the
message limit ended it), and each side's own selection, with ``agree`` after a deal and ``disagree``
when the selections did not fit. The closing ``<selection>`` holds what YOU keeps after a deal, ``no agreement``
after a walk-away or the turn limit, and ``disconnect`` when the game timed out, was left, or the agent
failed. :func:`parley.envs.corpus.load_corpus` reads the file like the corpus: it keeps the line in which
YOU speak first, and :func:`~parley.envs.corpus.dialogue_to_game` replays the acts (a proposal repeated
unchanged reads back as ``insist``, the corpus reader's convention).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from parley.envs.negotiation import verbalize_act

_PUNCTUATION = re.compile(r"\s*([.,;!?])\s*")
_DISCONNECTED = ("timeout", "returned", "agent_error")


def corpus_utterance(action: int, counts: list[int]) -> str:
    """An act as a corpus utterance: its words, lower-cased, punctuation as separate tokens."""
    return _tokenised(verbalize_act(action, counts).replace("--", " "))


def _context(counts: list[int], values: list[int]) -> str:
    return " ".join(f"{c} {v}" for c, v in zip(counts, values, strict=True))


def _tokenised(text: str) -> str:
    return " ".join(_PUNCTUATION.sub(r" \1 ", text.lower()).split())


def _text_game_lines(transcript: dict, turns: list[dict]) -> list[str]:
    """The two ``data.txt`` lines of a finished text-protocol game."""
    counts = list(transcript["counts"])
    sides = {"human": list(transcript["human_values"]), "agent": list(transcript["agent_values"])}
    said = [t for t in turns if t["kind"] == "say" and t["text"] != "<selection>"]
    ender = next((t["speaker"] for t in turns if t["kind"] == "say" and t["text"] == "<selection>"), None)
    if ender is None and said:  # the message limit ended the talk: the next side's <selection>
        ender = "agent" if said[-1]["speaker"] == "human" else "human"
    selections = {t["speaker"]: t["text"] for t in turns if t["kind"] == "select"}
    lines = []
    for me, other in (("human", "agent"), ("agent", "human")):
        talk = [f"{'YOU' if t['speaker'] == me else 'THEM'}: {_tokenised(t['text'])} <eos>" for t in said]
        closer = "YOU" if ender == me else "THEM"
        outcome = transcript["outcome"]
        mine = selections.get(me)
        if outcome in _DISCONNECTED or mine is None:
            tail = "disconnect <eos> reward=disconnect agree"
        elif outcome == "no_agreement" or mine == "<no_agreement>":
            tail = "no agreement <eos> reward=no agreement agree"
        else:
            keeps = [int(part.split("=")[1]) for part in mine.split()]
            selection = " ".join(f"item{i}={k}" for i, k in enumerate(keeps))
            score = sum(k * v for k, v in zip(keeps, sides[me], strict=True)) if outcome == "deal" else 0
            tail = f"{selection} <eos> reward={score} {'agree' if outcome == 'deal' else 'disagree'}"
        lines.append(f"{_context(counts, sides[me])} {' '.join(talk)} {closer}: <selection> {tail} "
                     f"{_context(counts, sides[other])}")
    return lines


def game_lines(transcript: dict) -> list[str]:
    """The two ``data.txt`` lines of one game (a row of the ``transcripts`` export); [] if it has no act
    or has not ended."""
    turns = sorted(transcript["turns"], key=lambda t: t["seq"])
    if transcript["outcome"] is None or not turns:
        return []
    if transcript.get("protocol") == "text":
        return _text_game_lines(transcript, turns)
    counts = list(transcript["counts"])
    sides = {"human": list(transcript["human_values"]), "agent": list(transcript["agent_values"])}
    lines = []
    for me, other in (("human", "agent"), ("agent", "human")):
        talk = [f"{'YOU' if t['speaker'] == me else 'THEM'}: {corpus_utterance(t['action'], counts)} <eos>"
                for t in turns]
        # The side that did not make the last act closes with the selection.
        closer = "THEM" if turns[-1]["speaker"] == me else "YOU"
        if transcript["outcome"] == "deal":
            human_gets = list(transcript["human_gets"])
            keeps = human_gets if me == "human" else [c - k for c, k in zip(counts, human_gets, strict=True)]
            score = sum(k * v for k, v in zip(keeps, sides[me], strict=True))
            selection = " ".join(f"item{i}={k}" for i, k in enumerate(keeps))
            tail = f"{selection} <eos> reward={score} agree"
        elif transcript["outcome"] in _DISCONNECTED:
            tail = "disconnect <eos> reward=disconnect agree"
        else:
            tail = "no agreement <eos> reward=no agreement agree"
        lines.append(f"{_context(counts, sides[me])} {' '.join(talk)} {closer}: <selection> {tail} "
                     f"{_context(counts, sides[other])}")
    return lines


def corpus_text(transcripts: Iterable[dict]) -> str:
    """``data.txt`` text for the finished games among ``transcripts`` (rows of the transcripts export)."""
    lines = [line for t in transcripts for line in game_lines(t)]
    return "".join(line + "\n" for line in lines)


def write_corpus(transcripts: Iterable[dict], path: str | Path) -> int:
    """Write :func:`corpus_text` to ``path``; returns the number of games written."""
    text = corpus_text(transcripts)
    Path(path).write_text(text)
    return text.count("\n") // 2
