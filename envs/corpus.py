"""Deal-or-No-Deal dialogues as coarse acts: a rule-based parser, coverage report and training data.

The corpus of Lewis et al. (2017) is free text. parley's game (:mod:`parley.envs.negotiation`) is played
with coarse acts -- ``propose(split)``, ``insist(split)``, ``agree``, ``walk_away`` -- the same act
vocabulary Kwon et al.'s negotiation code uses. This module turns corpus lines into those acts.

Reading the files
-----------------
* ``data.txt`` (raw): ``own context, YOU:/THEM: utterances, <selection> ..., reward=..., partner context``.
* ``val.txt`` / ``test.txt`` (tagged): ``<input> ... </input> <dialogue> ... </dialogue> <output> ...``.

Each dialogue appears twice in those files, once from each side; :func:`load_corpus` keeps the copy in
which YOU speak first, so every dialogue counts once and ``context.values[0]`` is the first speaker's.
``data.txt`` holds every dialogue of the corpus, those of ``test.txt`` included: :func:`load_corpus`
therefore drops any dialogue that also appears in a ``test.txt`` found next to it (``exclude_heldout``),
so the held-out split stays held out.

The parser (:func:`parse_utterance`), rule by rule
--------------------------------------------------
1. Text is lower-cased and split into sentences at ``. ! ?``. A sentence that talks about values
   (``worth``, ``value``, ``points``, ``worthless``, ``useless``, ``valuable``) or is negated
   (``don't``, ``can't``, ``not``, ``no`` before an item, ...) says nothing reliable about the split
   and is dropped.
2. Item mentions are found with their quantity: digits or number words, ``a/an/one``, ``both``,
   ``all``/``the`` + plural (= every item of that type), a bare plural (= all), a bare singular (= 1).
   ``book``/``hat``/``ball`` with plural and common variants (``basketball``); ``the rest``,
   ``everything else``, ``the others`` stand for whatever is left.
3. Each mention goes to a side. A speaker cue (``i``, ``me``, ``my``, ``i'll``, ``gimme``...) or a
   partner cue (``you``, ``your``...) sets the side for the items that follow it; post-position cues
   (``for me``, ``for you``, ``to you``...) claim the items just before them that no cue covered.
   An utterance without any cue ("2 hats and the ball?") names what the speaker wants.
   Mentions no cue covers are dropped.
4. The sides' claims become one split (what the speaker keeps). A type named for both sides must add
   up to its count. Items nobody was said to get go to the partner when the speaker named what they
   keep, to the speaker when only the partner's share was named. A quantity above the item count, or
   claims that do not add up, make the utterance unparseable.
5. With a split: ``insist`` when the text is firm (``final``, ``best i can do``, ``take it or leave
   it``, ``or no deal``...), else ``propose``. Without one: ``walk_away`` for ``no deal``; ``agree``
   for agreement words (``deal``, ``ok``, ``yes``, ``sounds good``...) with no negation; otherwise the
   utterance is unparseable (questions, greetings, bare rejections such as ``no``, value talk).
6. Refusing to give an item up claims it ("can't give you the ball", "i'm not budging on the ball",
   "no deal without the hat"); "i can't use X" leaves X to the partner; a reason after ``because`` /
   ``since`` is a clause of its own; of two offers joined by ", or" the first is read. Thanks on its own
   ("thank you !") is ``agree`` (in the corpus it answers an agreement or accepts the offer just made),
   as is an utterance with an agreeing sentence and none that rejects ("that'll work . i don't want you
   to get shafted"); saying that no deal will come ("we don't have a deal", "we're at an impasse") is
   ``walk_away``.

Turning a dialogue into a game (:func:`dialogue_to_game`)
---------------------------------------------------------
Acts are replayed through :class:`~parley.envs.negotiation.NegotiationState`. An utterance the parser
cannot read, or whose act the rules do not allow there (``agree`` with no partner offer on the table),
ends the usable part of the dialogue: the game state after it is unknown, so nothing after it is
used, and nothing is guessed. Consecutive messages by one speaker are merged (the game alternates).
A repeated identical proposal becomes ``insist``. The closing ``<selection>``: after an agreed deal
whose recorded selection matches the partner's standing offer it is ``agree``; after no agreement it
is ``walk_away``; otherwise it is left out.

Coverage (:func:`coverage_report`): share of utterances parsed (``<selection>`` tokens not counted),
dialogues fully parsed, and -- over agreed deals with a parsed proposal -- how often the last parsed
proposal matches the recorded selection.

Without a corpus, :func:`parley.agents.partners.synthetic.synthetic_corpus` plays scripted partners
against each other and records their dialogues in the same form.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from parley.envs.negotiation import (
    DEFAULT_MAX_TURNS,
    NUM_ACTIONS,
    Context,
    IllegalActionError,
    InvalidContextError,
    NegotiationState,
    encode_act,
)

# --------------------------------------------------------------------------------------------------
# Parsing one utterance
# --------------------------------------------------------------------------------------------------

_ITEM_WORDS: dict[str, tuple[int, bool]] = {}  # word -> (item type, plural)
for _word, _item, _plural in [
    ("book", 0, False), ("books", 0, True), ("boook", 0, False), ("boooks", 0, True), ("bk", 0, False),
    ("hat", 1, False), ("hats", 1, True), ("hatt", 1, False),
    ("ball", 2, False), ("balls", 2, True), ("basketball", 2, False), ("basketballs", 2, True),
    ("bal", 2, False), ("bals", 2, True), ("book's", 0, True), ("hat's", 1, True), ("ball's", 2, True),
]:
    _ITEM_WORDS[_word] = (_item, _plural)

_NUMBER_WORDS = {"zero": 0, "0": 0, "one": 1, "1": 1, "a": 1, "an": 1, "single": 1, "two": 2, "2": 2,
                 "three": 3, "3": 3, "four": 4, "4": 4, "five": 5, "5": 5, "six": 6, "6": 6}
_ALL_WORDS = {"all", "the", "both", "those", "these", "every", "each"}
_REST_PHRASES = ("the rest", "everything else", "the others", "the remaining", "all else", "rest",
                 "everything", "the remainder", "whatever is left", "what is left", "all the rest")
_SPEAKER_CUES = {"i", "me", "my", "i'll", "i'd", "im", "i'm", "mine", "myself", "ill", "gimme", "id", "lemme"}
_PARTNER_CUES = {"you", "your", "you'll", "you'd", "yours", "u", "youll", "yourself", "ya"}
_POST_SPEAKER = ("for me", "to me", "for myself", "are mine", "is mine", "go to me", "for i", "is my final offer",
                 "is my offer", "is my last offer", "is my best offer", "is what i need", "is what i want",
                 "is all i need", "is all i want", "is what i would like", "is what i'd like")
_POST_PARTNER = ("for you", "to you", "for u", "to u", "are yours", "is yours", "go to you")
_IMPERATIVE_PARTNER = {"take", "keep", "have"}
_IMPERATIVE_SPEAKER = {"need", "want", "give"}
_VALUE_WORDS = {"worth", "value", "values", "valued", "valuable", "points", "point", "worthless", "useless",
                "pts"}
_NEGATIONS = {"don't", "dont", "do not", "can't", "cant", "cannot", "not", "won't", "wont", "no", "never",
              "nothing", "none", "without", "n't", "doesn't", "doesnt", "isn't", "isnt"}
_FIRM_PHRASES = ("final", "best i can do", "take it or leave it", "last offer", "or no deal", "non negotiable",
                 "non-negotiable", "won't budge", "wont budge", "only deal", "that's it", "thats it",
                 "only way", "firm", "bottom line", "have to have", "must have")
_AGREE_WORDS = {"deal", "ok", "okay", "okey", "k", "kk", "sure", "yes", "yep", "yup", "yeah", "ya", "agreed",
                "agree", "accept", "accepted", "fine", "perfect", "great", "good", "works", "done", "alright",
                "cool", "awesome", "excellent", "fair", "deal.", "sold", "absolutely", "definitely", "yea", "yah",
                "reasonable", "fantastic", "super", "sweet", "wonderful", "terrific", "marvelous", "agreeable",
                "confirmed", "concur", "okie", "alrighty", "mmk", "deall"}


_AGREE_PHRASES = ("i can do that", "can do that", "live with that", "that'll work", "that will work", "that would work",
                  "will have to work", "i guess so", "i'll settle", "i will settle", "let's do it", "lets do it",
                  "let's do that", "lets do that", "i'm in", "im in", "you got it", "very well", "correct",
                  "it's a deal", "its a deal", "i'll take it", "i will take it", "i can work with that", "will do",
                  "sounds like a plan", "you got em", "shake on it", "i suppose", "go with it", "go with that",
                  "live with it", "ill do that", "i'll do that", "i will do that", "so be it", "go ahead", "right on",
                  "all yours")
# Thanks on its own accepts: in the corpus it answers an agreement or, far less often, accepts the offer
# just made (the recorded selection is then that offer).
_THANKS = re.compile(r"(?:(?:thanks|thank you|thx|ty|gracias|thanks a lot|thank you very much|thank you so much)"
                     r"(?: [!.]+)* ?)+")
_WALK_AWAY_PHRASES = ("no deal", "no thanks", "walk away", "no agreement", "nodeal", "no deals", "nd", "no dealz",
                      "no dea", "nod eal", "impasse", "impass", "stalemate", "standoff", "standstill")
# Saying that no deal can be made, when no split is named: "we can't make a deal", "i don't think we will
# reach a deal", "guess we won't be making a deal".
_WALK_AWAY_PATTERN = re.compile(
    r"\b(?:can't|cant|cannot|can not|won't|wont|will not|not going to|not gonna|unable to|never)"
    r"(?: be able to| be| be making| ever)? (?:make|making|reach|reaching|come to|get to|agree on|do|have) "
    r"(?:a |any |this |that )?(?:deal|agreement)\b"
    r"|\b(?:don't|dont|do not) think (?:we|this)(?:'ll| will| can| are going to| is going to)"
    r" (?:get anywhere|work|make a deal|reach a deal|agree|come to)"
    r"|\b(?:can't|cant|cannot|won't|wont|not going to|unable to)(?: be able to)? (?:come up with|find) (?:a |any )?"
    r"(?:deal|agreement)\b"
    r"|\bwe (?:don't|dont|do not) (?:have|get) (?:a |any )?deal\b"
    r"|\bwe (?:can't|cant|cannot|won't|wont|couldn't|couldnt) (?:deal|agree|come to (?:an )?agreement|agree to terms)\b"
    r"|\bwe(?:'re| are|'ll| will)? (?:just )?(?:not|aren't|arent|will not|won't|wont)(?: be able to| going to| gonna)?"
    r" (?:make|reach|agree|come to|get)\b(?: (?:a|an|any) (?:deal|agreement))?"
    r"|\b(?:doesn't|does not|doesnt) (?:look|seem) like we (?:can|will|could|are going to) (?:make|reach|agree)"
    r"|\bwe (?:don't|dont|do not) got (?:a |any )?deal\b")


@dataclass(frozen=True)
class ParsedAct:
    """A coarse act read from an utterance: ``kind`` and, for propose/insist, the split the speaker keeps."""

    kind: str
    split: tuple[int, int, int] | None = None

    def action(self) -> int:
        return encode_act(self.kind, self.split)


def _tokenize(text: str) -> list[str]:
    text = text.lower().replace("’", "'").replace("`", "'")
    text = re.sub(r"([,;:!?()\"])", r" \1 ", text)
    text = re.sub(r"(?<=\d)(?=[a-z])", " ", text)  # "2books" -> "2 books"
    return text.split()


def _sentences(text: str) -> list[list[str]]:
    tokens = _tokenize(text)
    out, cur = [], []
    for tok in tokens:
        if tok in {".", "!", "?"} or re.fullmatch(r"[.!?]+", tok):
            if cur:
                out.append(cur)
            cur = []
        elif tok.endswith((".", "!", "?")) and len(tok) > 1:
            cur.append(tok.rstrip(".!?"))
            out.append(cur)
            cur = []
        else:
            cur.append(tok)
    if cur:
        out.append(cur)
    return out


def _has_phrase(tokens: Sequence[str], phrases: Iterable[str]) -> bool:
    joined = " " + " ".join(tokens) + " "
    return any(f" {p} " in joined for p in phrases)


def _is_negated_before_item(tokens: Sequence[str]) -> bool:
    """True when a negation appears before the sentence's last item mention."""
    last_item = max((i for i, t in enumerate(tokens) if t in _ITEM_WORDS), default=-1)
    if last_item < 0:
        return False
    head = tokens[:last_item]
    return any(t in _NEGATIONS or t.endswith("n't") for t in head)


def _quantity_before(tokens: Sequence[str], i: int, plural: bool) -> int | str:
    """The quantity for the item word at ``i``: an int, or "all"."""
    j = i - 1
    # Skip "of the" / adjectives between a number and the item ("two of the books", "all 3 books").
    skipped = 0
    while j >= 0 and skipped < 3 and tokens[j] in {"of", "the", "my", "your", "those", "these", "extra", "other",
                                                     "more", "remaining"}:
        if tokens[j] == "the" and (j == 0 or tokens[j - 1] not in _NUMBER_WORDS and tokens[j - 1] not in _ALL_WORDS):
            break
        j -= 1
        skipped += 1
    if j >= 0:
        word = tokens[j]
        if word in _NUMBER_WORDS:
            return _NUMBER_WORDS[word]
        if word in {"all", "both", "every", "those", "these"}:
            return "all"
        if word == "the":
            return "all" if plural else 1
    return "all" if plural else 1


@dataclass
class _Claims:
    speaker: dict[int, int | str] = field(default_factory=dict)
    partner: dict[int, int | str] = field(default_factory=dict)
    speaker_rest: bool = False
    partner_rest: bool = False


def _collect_claims(sentences: list[list[str]], unclaimed_to_speaker: bool = True) -> _Claims:
    claims = _Claims()
    any_cue = False
    unclaimed: list[tuple[int, int | str] | str] = []
    for sentence in sentences:
        side: str | None = None  # a side carries across the clauses of one sentence
        pending: list[tuple[int, int | str] | str] = []
        sentence = _first_alternative(_mark_exceptions(_rewrite_phrases(sentence)))
        sentence_cue = False
        claims_before = (len(claims.speaker), len(claims.partner), claims.speaker_rest, claims.partner_rest)
        for tokens in _clauses(sentence):
            if any(t in _VALUE_WORDS for t in tokens):
                continue  # value talk ("the hat is worth 5 to me") is not an offer
            i = 0
            while i < len(tokens):
                tok = tokens[i]
                post = _match_any(tokens, i, _POST_SPEAKER, "speaker") or _match_any(tokens, i, _POST_PARTNER, "partner")
                if post is not None:
                    who, length = post
                    for claim in pending:
                        _add_claim(claims, who, claim)
                    pending, side, sentence_cue = [], None, True  # the cue closes its phrase
                    i += length
                    continue
                if tokens[i:i + 3] in (["one", "of", "each"], ["1", "of", "each"], ["a", "of", "each"]):
                    for item in range(3):
                        (pending.append((item, 1)) if side is None else _add_claim(claims, side, (item, 1)))
                    i += 3
                    continue
                rest = _match_any(tokens, i, _REST_PHRASES, "rest")
                named = pending or claims.speaker or claims.partner
                if tok == "everything" and rest is not None and rest[1] == 1 and not named:
                    for item in range(3):  # a bare "everything" names every item, not "the rest"
                        (pending.append((item, "all")) if side is None else _add_claim(claims, side, (item, "all")))
                    i += 1
                    continue
                if tok == _EXCEPT and side is not None:
                    side = "partner" if side == "speaker" else "speaker"  # "all but the ball": the ball goes across
                elif tok in _SPEAKER_CUES:
                    side, sentence_cue = "speaker", True
                elif side is None and tok in _IMPERATIVE_PARTNER:
                    side, sentence_cue = "partner", True  # "take the balls": said to the partner
                elif side is None and tok in _IMPERATIVE_SPEAKER:
                    side, sentence_cue = "speaker", True  # "need the book": the subject "i" left out
                elif tok in _PARTNER_CUES:
                    side, sentence_cue = "partner", True
                elif tok in ("we", "us"):
                    side = None
                elif rest is not None:
                    (pending.append("rest") if side is None else _add_claim(claims, side, "rest"))
                    i += rest[1]
                    continue
                elif tok in _ITEM_WORDS:
                    item, plural = _ITEM_WORDS[tok]
                    claim = (item, _quantity_before(tokens, i, plural))
                    (pending.append(claim) if side is None else _add_claim(claims, side, claim))
                i += 1
        unclaimed.extend(pending)
        # A cue counts only in a sentence that names items: "that won't work for me . one book and one ball"
        # still names what the speaker wants.
        claims_after = (len(claims.speaker), len(claims.partner), claims.speaker_rest, claims.partner_rest)
        any_cue = any_cue or (sentence_cue and claims_after != claims_before)
    # Rule 3b: an utterance with no side cue at all ("2 hats and the ball?") names what the speaker wants;
    # when the cues only gave one side "the rest" ("2 hats and a ball , i keep the rest"), the uncued items
    # are the other side's.
    if unclaimed_to_speaker and not any_cue:
        for claim in unclaimed:
            _add_claim(claims, "speaker", claim)
    elif (unclaimed_to_speaker and not claims.speaker and not claims.partner
          and claims.speaker_rest != claims.partner_rest):
        for claim in unclaimed:
            _add_claim(claims, "partner" if claims.speaker_rest else "speaker", claim)
    return claims


_EXCEPT = "<except>"


def _first_alternative(sentence: list[str]) -> list[str]:
    """The first of two offers joined by "or" ("i want the ball and both books , or you get the ball and i
    take the rest"): the sentence up to ", or" when both sides of it name items and the second one
    gives someone items of its own."""
    for i in range(1, len(sentence) - 1):
        if sentence[i] == "or" and sentence[i - 1] == ",":
            head, tail = sentence[:i - 1], sentence[i + 1:]
            cued = any(t in _SPEAKER_CUES or t in _PARTNER_CUES for t in tail)
            if cued and any(t in _ITEM_WORDS for t in head) and any(t in _ITEM_WORDS for t in tail):
                return head
    return sentence

# Phrases rewritten before the claims are read, each as a regular expression over the sentence's
# space-joined tokens. Rejections that open a sentence ("no", "that won't work for me") say nothing about
# the split and would otherwise negate the offer after them; "can't give up X" and "can't make a deal
# without X" claim X for the speaker; "i don't need X" leaves X to the partner.
_NEG = r"(?:can't|cant|cannot|can not|won't|wont|will not|couldn't|couldnt)"
_PHRASE_REWRITES: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(a), b) for a, b in (
    (r"^(?:(?:no|nope|nah|sorry|nop|naw|hmm+|ok|okay)(?: ,)? )+(?=\S)(?!deal\b|thanks\b|way\b)", ""),
    (r"^(?:that|it|this|that deal|that offer)(?: really)? (?:won't|wont|will not|doesn't|doesnt|does not|isn't|isnt"
     r"|is not|is not going to|isn't going to|not going to|ain't|aint) (?:going to )?(?:work|good|fair|do)"
     r"(?: for me)?(?: ,)? ", ""),
    (r"^(?:no can do|can't do that|cant do that|i can't do that|i cant do that|i cannot do that|not happening)"
     r"(?: ,)? ", ""),
    (rf"\b(?:i )?{_NEG}(?: really)? (?:give up|part with|let go of|lose|go without|do without|live without)\b",
     "i need"),
    (rf"(?<!you )(?<!u )\b(?:i )?{_NEG}(?: really)? give (?:you|away|out)\b(?! (?:more|everything|all|both|any|anything|that)\b)",
     "i need"),
    (r"(?<!you're )(?<!you are )(?<!youre )\b(?:(?:i'm|im|i am)(?: pretty much| really)? )?not (?:budging on|moving off|moving on|giving up|willing to give up"
     r"|going to give up|gonna give up|letting go of|parting with)\b", "i need"),
    (r"\bi (?:don't|dont|do not)(?: really)? want to (?:give up|give away|part with|lose)\b", "i need"),
    (r"\b(?:there )?(?:won't|wont|will not|can't|cant|cannot) be (?:a|any) deal without\b", "i need"),
    (r"^no deal without\b", "i need"),
    (r"\b(?:there's|theres|there is) no way (?:that )?i (?:can|could|will) (?:give up|part with|let go of)\b", "i need"),
    (rf"(?<!you )(?<!u )\b(?:i )?{_NEG}(?: really)? use\b", "you can have"),
    (rf"\b(?:i )?{_NEG} (?:make a deal|make deal|do a deal|make any deal|deal|do it|do this|do that|do anything"
     r"|leave|go|agree|accept|work|make it work) without(?: getting)?\b", "i need"),
    (r"\b(?:i )?(?:don't|dont|do not)(?: really)? (?:need|want|care about|care for|value)\b", "you can have"),
    (r"\b(?:all the items|all items|all of it|it all|all of them|all of the items)\b", "everything"),
    (r"(?<=\S) no (?=(?:books?|hats?|balls?)\b)", " 0 "),  # "1 book no hats and 1 ball"
    (r"\bone of (?:every item|each item|everything|every thing|each thing|each type)\b", "one of each"),
))


def _rewrite_phrases(sentence: list[str]) -> list[str]:
    text = " ".join(sentence)
    for pattern, replacement in _PHRASE_REWRITES:
        text = pattern.sub(replacement, text)
    return text.split()


def _mark_exceptions(sentence: list[str]) -> list[str]:
    """Rewrite "everything but X" / "all except X" as "the rest <except> X"."""
    out: list[str] = []
    i = 0
    while i < len(sentence):
        if sentence[i] in ("everything", "all", "rest") and i + 1 < len(sentence) and \
                sentence[i + 1] in ("but", "except", "besides", "minus"):
            out += ["the", "rest", _EXCEPT]
            i += 2
        else:
            out.append(sentence[i])
            i += 1
    return out


# An affirmative demand or offer opens a new clause even without a comma, so that a rejection before it
# does not negate it: "sorry i cant do that i need the book and balls".
_CLAUSE_OPENERS = (
    "i need", "i want", "i'll take", "ill take", "i will take", "i must have", "i would need", "i would like",
    "i'd like", "id like", "i can only offer", "i would give you", "i will give you", "i'll give you",
    "you can have", "you can keep", "you could keep", "you could have", "how about")


# Words that end a clause. A reason ("... because it is worth the most to me") is a clause of its own, so
# that its value talk or negation does not hide the claim before it.
_CLAUSE_BREAKS = {",", ";", "but", "however", ":", "because", "since", "cause", "cuz", "bc"}


def _clauses(sentence: list[str]) -> list[list[str]]:
    """Comma-separated clauses of a sentence, leaving out clauses negated before an item mention."""
    out, clause = [], []
    for i, tok in enumerate(sentence + [","]):
        opener = bool(clause) and i < len(sentence) and \
            _match_any(sentence, i, _CLAUSE_OPENERS, "opener") is not None
        if tok in _CLAUSE_BREAKS or opener:
            if clause and not _is_negated_before_item(clause):
                out.append(clause)
            clause = [tok] if opener else []
        else:
            clause.append(tok)
    return out


def _match_any(tokens: Sequence[str], i: int, phrases: tuple[str, ...], label: str) -> tuple[str, int] | None:
    """(label, length in words) of the first of ``phrases`` that starts at ``tokens[i]``, or None."""
    for words in _phrases_by_first_word(phrases).get(tokens[i], ()):
        if list(tokens[i:i + len(words)]) == words:
            return label, len(words)
    return None


@functools.cache
def _phrases_by_first_word(phrases: tuple[str, ...]) -> dict[str, list[list[str]]]:
    """``phrases`` as word lists grouped by their first word, in their order (looking up one token's
    candidates is much cheaper than trying every phrase at every token)."""
    index: dict[str, list[list[str]]] = {}
    for phrase in phrases:
        words = phrase.split()
        index.setdefault(words[0], []).append(words)
    return index


def _add_claim(claims: _Claims, side: str, claim: tuple[int, int | str] | str) -> None:
    if claim == "rest":
        if side == "speaker":
            claims.speaker_rest = True
        else:
            claims.partner_rest = True
        return
    item, qty = claim
    target = claims.speaker if side == "speaker" else claims.partner
    # A later, more specific mention of the same type by the same side replaces the earlier one.
    target[item] = qty


def _claims_to_split(claims: _Claims, counts: Sequence[int]) -> tuple[int, int, int] | None:
    if not claims.speaker and not claims.partner:
        return None  # "the rest" alone says nothing without the items it is the rest of
    keep: list[int | None] = [None, None, None]
    for item in range(3):
        s = claims.speaker.get(item)
        p = claims.partner.get(item)
        s_n = counts[item] if s == "all" else s
        p_n = counts[item] if p == "all" else p
        if (s_n is not None and s_n > counts[item]) or (p_n is not None and p_n > counts[item]):
            raise _Unparseable(f"more {item} items claimed than exist")
        if s_n is not None and p_n is not None:
            if s == "all" and p != "all":  # "all the books but one for you" style: partner's number wins
                s_n = counts[item] - p_n
            elif p == "all" and s != "all":
                p_n = counts[item] - s_n
            if s_n + p_n != counts[item]:
                raise _Unparseable("the two shares of one item type do not add up")
            keep[item] = s_n
        elif s_n is not None:
            keep[item] = s_n
        elif p_n is not None:
            keep[item] = counts[item] - p_n
    for item in range(3):
        if keep[item] is None:
            if claims.speaker_rest and not claims.partner_rest:
                keep[item] = counts[item]
            elif claims.partner_rest and not claims.speaker_rest:
                keep[item] = 0
            elif claims.speaker:
                keep[item] = 0
            else:
                keep[item] = counts[item]
    return (int(keep[0]), int(keep[1]), int(keep[2]))


class _Unparseable(Exception):
    pass


def parse_utterance(text: str, counts: Sequence[int]) -> ParsedAct | None:
    """Read one utterance as a coarse act, or return None when the rules cannot read it.

    ``counts`` are the item counts of the negotiation (quantities like "the books" need them). The
    returned split is what the *speaker* keeps. See the module docstring for the rules.
    """
    counts = tuple(int(c) for c in counts)
    if len(counts) != 3:
        raise ValueError(f"counts must hold 3 item counts, got {counts}")
    sentences = _sentences(text)
    tokens = [t for s in sentences for t in s]
    if not tokens or tokens == ["<selection>"]:
        return None
    claims = _collect_claims(sentences)
    try:
        split = _claims_to_split(claims, counts)
    except _Unparseable:
        return None
    if split is not None:
        return ParsedAct("insist" if _has_phrase(tokens, _FIRM_PHRASES) else "propose", split)
    if _has_phrase(tokens, _WALK_AWAY_PHRASES) or _WALK_AWAY_PATTERN.search(" ".join(tokens)):
        return ParsedAct("walk_away")
    if any(t in _ITEM_WORDS for t in tokens):
        return None
    if _THANKS.fullmatch(" ".join(tokens)):
        return ParsedAct("agree")
    # Agreement is read from the whole utterance, from its last clause, which may follow a grumble ("not
    # great for me , but i accept"), or from its sentences: one agrees and none rejects ("that'll work . i
    # don't want you to get shafted").
    last = " ".join(tokens)
    last = re.split(r" (?:[,;.!?]|but|so|however) ", " " + last + " ")
    last_words = [w.strip(",.!?") for w in (next((c for c in reversed(last) if c.strip()), "")).split()]
    for words in ([t.strip(",.!?") for t in tokens], last_words):
        if not _negated(words) and _agrees(words):
            return ParsedAct("agree")
    if len(sentences) > 1:
        agreeing = [_agrees(s) for s in sentences]
        rejecting = [_negated(s) and (a or s[0] in _REJECTION_OPENERS) for s, a in zip(sentences, agreeing)]
        if any(agreeing) and not any(rejecting):
            return ParsedAct("agree")
    return None


_REJECTION_OPENERS = {"no", "nope", "nah", "not", "never", "sorry", "can't", "cant", "cannot", "won't", "wont"}


def _negated(words: Sequence[str]) -> bool:
    return any(w in _NEGATIONS or w.endswith("n't") for w in words)


def _agrees(words: Sequence[str]) -> bool:
    return any(w.strip(",.!?") in _AGREE_WORDS for w in words) or _has_phrase(words, _AGREE_PHRASES)


@functools.lru_cache(maxsize=65536)
def _parse_cached(text: str, counts: tuple[int, int, int]) -> ParsedAct | None:
    return parse_utterance(text, counts)


def parse_utterance_cached(text: str, counts: Sequence[int]) -> ParsedAct | None:
    """:func:`parse_utterance` with a cache: text games repeat the same sentences many times."""
    return _parse_cached(text, tuple(int(c) for c in counts))


# --------------------------------------------------------------------------------------------------
# Dialogues
# --------------------------------------------------------------------------------------------------


@dataclass
class Utterance:
    """One message: ``speaker`` 0 (the line's YOU) or 1 (THEM), its text, and the parsed act or None."""

    speaker: int
    text: str
    act: ParsedAct | None = None


@dataclass
class Dialogue:
    """One corpus dialogue. ``context.values[0]`` belongs to speaker 0 (YOU in the source line).

    ``outcome`` is ``"agree"``, ``"disagree"``, ``"no_agreement"`` or ``"disconnect"``; ``selection`` is
    speaker 0's recorded pick (what it keeps) when there is one.
    """

    context: Context
    utterances: list[Utterance]
    outcome: str
    selection: tuple[int, int, int] | None = None
    source: str = ""

    @property
    def first_speaker(self) -> int:
        return self.utterances[0].speaker if self.utterances else 0

    def key(self) -> tuple:
        return (self.context.counts, self.context.values, tuple(u.text for u in self.utterances))


def _split_messages(dialogue_text: str) -> list[tuple[int, str]]:
    messages = []
    for chunk in dialogue_text.split("<eos>"):
        chunk = chunk.strip()
        if not chunk:
            continue
        if chunk.startswith("YOU:"):
            messages.append((0, chunk[4:].strip()))
        elif chunk.startswith("THEM:"):
            messages.append((1, chunk[5:].strip()))
        else:
            raise ValueError(f"a message must start with YOU: or THEM:, got {chunk[:40]!r}")
    return messages


def _parse_selection(tokens: Sequence[str]) -> tuple[int, int, int] | None:
    found = {}
    for t in tokens:
        m = re.fullmatch(r"item([012])=(\d+)", t)
        if m:
            found.setdefault(int(m.group(1)), int(m.group(2)))
    if len(found) == 3:
        return (found[0], found[1], found[2])
    return None


def parse_raw_line(line: str, source: str = "") -> Dialogue:
    """A ``data.txt`` line: own context, messages, ``<selection> ... reward=... outcome``, partner context."""
    tokens = line.split()
    if len(tokens) < 12:
        raise ValueError("a data.txt line holds the own context, the dialogue, the outcome and the partner context")
    own = [int(t) for t in tokens[:6]]
    partner = [int(t) for t in tokens[-6:]]
    if own[0::2] != partner[0::2]:
        raise InvalidContextError("the two sides disagree on the counts")
    context = Context(tuple(own[0::2]), (tuple(own[1::2]), tuple(partner[1::2])))
    body = " ".join(tokens[6:-6])
    if "<selection>" not in body:
        raise ValueError("a data.txt line needs a <selection> message")
    talk, tail = body.split("<selection>", 1)
    talk = re.sub(r"(YOU:|THEM:)\s*$", "", talk.strip()).strip()
    tail_tokens = tail.split()
    if "disconnect" in tail_tokens:
        outcome = "disconnect"
    elif "no" in tail_tokens and "agreement" in tail_tokens:
        outcome = "no_agreement"
    elif tail_tokens and tail_tokens[-1] in ("agree", "disagree"):
        outcome = tail_tokens[-1]
    else:
        raise ValueError(f"unrecognised outcome {tail.strip()[:60]!r}")
    selection = _parse_selection(tail_tokens)
    utterances = [Utterance(s, t) for s, t in _split_messages(talk)]
    return Dialogue(context, utterances, outcome, selection, source)


def parse_tagged_line(line: str, source: str = "") -> Dialogue:
    """A ``val.txt`` / ``test.txt`` line (``<input> ... <dialogue> ... <output> ... <partner_input> ...``)."""
    try:
        own = [int(t) for t in line.split("<input>")[1].split("</input>")[0].split()]
        partner = [int(t) for t in line.split("<partner_input>")[1].split("</partner_input>")[0].split()]
        talk = line.split("<dialogue>")[1].split("</dialogue>")[0]
        output = line.split("<output>")[1].split("</output>")[0].split()
    except IndexError:
        raise ValueError("expected <input>, <dialogue>, <output> and <partner_input> sections") from None
    context = Context(tuple(own[0::2]), (tuple(own[1::2]), tuple(partner[1::2])))
    talk = talk.replace("<selection>", "").strip()
    talk = re.sub(r"(YOU:|THEM:)\s*$", "", talk).strip()
    if output and output[0] in ("<disagree>", "<no_agreement>", "<disconnect>"):
        outcome = output[0].strip("<>")
        selection = None
    else:
        selection = _parse_selection(output[:3])
        other = _parse_selection(output[3:])
        agreed = selection is not None and other is not None and all(
            a + b == c for a, b, c in zip(selection, other, context.counts))
        outcome = "agree" if agreed else "disagree"
    utterances = [Utterance(s, t) for s, t in _split_messages(talk)]
    return Dialogue(context, utterances, outcome, selection, source)


def _heldout_keys(path: Path) -> set[tuple]:
    keys = set()
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                d = parse_tagged_line(line)
            except (ValueError, InvalidContextError):
                continue
            keys.add(d.key())
    return keys


def load_corpus(path: str | Path, *, exclude_heldout: bool = True, parse: bool = True,
                limit: int | None = None) -> list[Dialogue]:
    """Read a Deal-or-No-Deal dialogue file (raw ``data.txt`` or tagged ``val.txt``), one copy per dialogue.

    ``path`` may also be the corpus directory, which reads its ``data.txt``. With ``exclude_heldout``,
    dialogues that also appear in a ``test.txt`` next to a ``data.txt`` are dropped (``data.txt`` holds
    the test split too). Lines whose context breaks the rules are skipped. ``parse`` fills each
    utterance's ``act`` with :func:`parse_utterance`.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "data.txt"
    if not path.is_file():
        raise FileNotFoundError(f"no corpus file at {path} (expected data.txt, val.txt or a directory holding data.txt)")
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{path}: empty corpus file")
    tagged = lines[0].startswith("<input>")
    exclude: set[tuple] = set()
    if exclude_heldout and not tagged and (path.parent / "test.txt").is_file() and path.name != "test.txt":
        exclude = _heldout_keys(path.parent / "test.txt")
    dialogues = []
    for n, line in enumerate(lines, start=1):
        try:
            d = parse_tagged_line(line, f"{path.name}:{n}") if tagged else parse_raw_line(line, f"{path.name}:{n}")
        except (ValueError, InvalidContextError):
            continue
        if not d.utterances or d.utterances[0].speaker != 0:
            continue  # the other copy of this dialogue, where YOU speak first, is kept
        if d.key() in exclude:
            continue
        if parse:
            for u in d.utterances:
                u.act = parse_utterance(u.text, d.context.counts)
        dialogues.append(d)
        if limit is not None and len(dialogues) >= limit:
            break
    return dialogues


# --------------------------------------------------------------------------------------------------
# Dialogues as games
# --------------------------------------------------------------------------------------------------


@dataclass
class Game:
    """A dialogue replayed as legal acts: ``actions[t]`` sent by ``speakers[t]``, from ``first_player``.

    ``complete`` is True when the whole dialogue (up to its closing selection) was replayed.
    """

    context: Context
    first_player: int
    speakers: list[int]
    actions: list[int]
    complete: bool

    def states(self, max_turns: int = DEFAULT_MAX_TURNS) -> Iterable[tuple[NegotiationState, int]]:
        """Each (state before the act, act) pair, replayed."""
        state = NegotiationState(self.context, max_turns=max_turns, first_player=self.first_player)
        for action in self.actions:
            if state.is_terminal():
                return
            yield state.clone(), action
            state.apply_action(action)


def dialogue_to_game(dialogue: Dialogue, max_turns: int = DEFAULT_MAX_TURNS) -> Game:
    """Replay a parsed dialogue's acts; stop at the first unreadable or illegal one (see module docs)."""
    # Merge consecutive messages of one speaker: the later readable act stands for the turn.
    turns: list[tuple[int, ParsedAct | None]] = []
    for u in dialogue.utterances:
        if turns and turns[-1][0] == u.speaker:
            prev = turns[-1][1]
            turns[-1] = (u.speaker, u.act if u.act is not None else prev)
        else:
            turns.append((u.speaker, u.act))
    first = turns[0][0] if turns else 0
    state = NegotiationState(dialogue.context, max_turns=max_turns, first_player=first)
    speakers, actions = [], []
    complete = True
    for speaker, act in turns:
        if state.is_terminal():
            break
        if act is None:
            complete = False
            break
        if act.kind == "propose" and state.last_proposals[speaker] == act.split:
            act = ParsedAct("insist", act.split)
        try:
            state.apply_action(act.action())
        except IllegalActionError:
            complete = False
            break
        speakers.append(speaker)
        actions.append(act.action())
    if complete and not state.is_terminal():
        closing = _closing_act(dialogue, state)
        if closing is not None:
            speakers.append(state.current_player)
            actions.append(closing)
            state.apply_action(closing)
    return Game(dialogue.context, first, speakers, actions, complete)


def _closing_act(dialogue: Dialogue, state: NegotiationState) -> int | None:
    """``agree`` / ``walk_away`` for the closing ``<selection>`` (see module docs), or None."""
    mover = state.current_player
    if dialogue.outcome == "agree":
        if state.standing_offer is None or state.standing_offer[0] == mover or dialogue.selection is None:
            return None
        proposer, kept = state.standing_offer
        zero_keeps = kept if proposer == 0 else tuple(c - k for c, k in zip(dialogue.context.counts, kept))
        return encode_act("agree") if tuple(zero_keeps) == tuple(dialogue.selection) else None
    if dialogue.outcome in ("no_agreement", "disagree"):
        return encode_act("walk_away")
    return None


# --------------------------------------------------------------------------------------------------
# Coverage
# --------------------------------------------------------------------------------------------------


@dataclass
class CoverageReport:
    """How much of a corpus the parser reads, and how well the parsed proposals match the selections."""

    dialogues: int
    utterances: int
    parsed: int
    unparseable: int
    dialogues_fully_parsed: int
    deals_with_proposal: int
    last_proposal_matches_selection: int
    training_acts: int

    @property
    def share_parsed(self) -> float:
        return self.parsed / max(self.utterances, 1)

    @property
    def selection_agreement(self) -> float:
        return self.last_proposal_matches_selection / max(self.deals_with_proposal, 1)

    def as_dict(self) -> dict:
        return {**self.__dict__, "share_parsed": self.share_parsed, "selection_agreement": self.selection_agreement}

    def __str__(self) -> str:
        return (f"{self.dialogues} dialogues, {self.utterances} utterances: {self.parsed} parsed "
                f"({100 * self.share_parsed:.1f}%), {self.unparseable} unparseable (kept out); "
                f"{self.dialogues_fully_parsed} dialogues fully parsed; last parsed proposal matches the "
                f"recorded selection in {self.last_proposal_matches_selection}/{self.deals_with_proposal} "
                f"agreed deals ({100 * self.selection_agreement:.1f}%); {self.training_acts} acts usable for training")


def coverage_report(dialogues: Sequence[Dialogue], max_turns: int = DEFAULT_MAX_TURNS) -> CoverageReport:
    """Parse coverage of ``dialogues`` (whose utterances were parsed by :func:`load_corpus`)."""
    utterances = parsed = full = deals = matches = acts = 0
    for d in dialogues:
        n_parsed = sum(u.act is not None for u in d.utterances)
        utterances += len(d.utterances)
        parsed += n_parsed
        full += n_parsed == len(d.utterances)
        last = None
        for u in d.utterances:
            if u.act is not None and u.act.split is not None:
                last = u.act.split if u.speaker == 0 else tuple(c - k for c, k in zip(d.context.counts, u.act.split))
        if d.outcome == "agree" and d.selection is not None and last is not None:
            deals += 1
            matches += tuple(last) == tuple(d.selection)
        acts += len(dialogue_to_game(d, max_turns).actions)
    return CoverageReport(len(dialogues), utterances, parsed, utterances - parsed, full, deals, matches, acts)


# --------------------------------------------------------------------------------------------------
# Training data
# --------------------------------------------------------------------------------------------------


@dataclass
class ActDataset:
    """(observation, legal mask, action) triples for behaviour cloning, plus a per-example weight."""

    observations: np.ndarray  # (N, D) float32
    masks: np.ndarray  # (N, 252) int8
    actions: np.ndarray  # (N,) int64
    weights: np.ndarray  # (N,) float32

    def __len__(self) -> int:
        return len(self.actions)

    @classmethod
    def empty(cls, observation_size: int) -> ActDataset:
        return cls(np.zeros((0, observation_size), np.float32), np.zeros((0, NUM_ACTIONS), np.int8),
                   np.zeros(0, np.int64), np.zeros(0, np.float32))

    def subset(self, idx: np.ndarray) -> ActDataset:
        return ActDataset(self.observations[idx], self.masks[idx], self.actions[idx], self.weights[idx])

    def concat(self, other: ActDataset) -> ActDataset:
        return ActDataset(np.concatenate([self.observations, other.observations]),
                          np.concatenate([self.masks, other.masks]),
                          np.concatenate([self.actions, other.actions]),
                          np.concatenate([self.weights, other.weights]))

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, observations=self.observations, masks=self.masks, actions=self.actions,
                            weights=self.weights)

    @classmethod
    def load(cls, path: str | Path) -> ActDataset:
        with np.load(path) as f:
            return cls(f["observations"], f["masks"], f["actions"], f["weights"])


def games_to_dataset(games: Sequence[Game], max_turns: int = DEFAULT_MAX_TURNS, weight: float = 1.0) -> ActDataset:
    """Every act of every game, seen by its sender, as a behaviour-cloning example."""
    obs, masks, actions = [], [], []
    for game in games:
        for state, action in game.states(max_turns):
            player = state.current_player
            obs.append(state.observation(player))
            masks.append(state.legal_action_mask(player))
            actions.append(action)
    size = 16 + 2 * max_turns
    if not actions:
        return ActDataset.empty(size)
    return ActDataset(np.stack(obs).astype(np.float32), np.stack(masks).astype(np.int8),
                      np.array(actions, dtype=np.int64), np.full(len(actions), weight, np.float32))


def corpus_dataset(dialogues: Sequence[Dialogue], max_turns: int = DEFAULT_MAX_TURNS) -> ActDataset:
    """Behaviour-cloning examples from parsed dialogues (usable prefixes only)."""
    return games_to_dataset([dialogue_to_game(d, max_turns) for d in dialogues], max_turns)


def split_by_scenario(dialogues: Sequence[Dialogue], fractions: Sequence[float], seed: int = 0) -> list[list[Dialogue]]:
    """Split dialogues into disjoint parts by scenario (counts and both valuations, either role order).

    No scenario appears in two parts, so a model trained on one part has never seen another part's games.
    """
    if abs(sum(fractions) - 1.0) > 1e-6 or any(f < 0 for f in fractions):
        raise ValueError(f"fractions must be non-negative and sum to 1, got {tuple(fractions)}")

    def scenario(d: Dialogue) -> tuple:
        return (d.context.counts, tuple(sorted(d.context.values)))

    keys = sorted({scenario(d) for d in dialogues})
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(keys))
    bounds = np.cumsum([0] + [int(round(f * len(keys))) for f in fractions])
    bounds[-1] = len(keys)
    part_of = {}
    for part in range(len(fractions)):
        for k in order[bounds[part]:bounds[part + 1]]:
            part_of[keys[k]] = part
    parts: list[list[Dialogue]] = [[] for _ in fractions]
    for d in dialogues:
        parts[part_of[scenario(d)]].append(d)
    return parts
