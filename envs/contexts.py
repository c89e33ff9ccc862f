"""Reading negotiation contexts from files: the corpus of Lewis et al. (2017), its self-play contexts
and OpenSpiel's bargaining instances.

``load_contexts(path)`` detects the file's format from its first non-empty line and returns a list of
:class:`~parley.envs.negotiation.Context`; the rules module itself reads no files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from parley.envs.negotiation import Context, InvalidContextError

__all__ = ["load_contexts"]


def _parse_ints(tokens: Sequence[str], what: str) -> list[int]:
    try:
        return [int(t) for t in tokens]
    except ValueError:
        raise InvalidContextError(f"expected integers for {what}, got {' '.join(tokens)!r}") from None


def _context_from_cnt_val(own: list[int], partner: list[int]) -> Context:
    if len(own) != 6 or len(partner) != 6:
        raise InvalidContextError("expected 6 integers per side: count value count value count value")
    if own[0::2] != partner[0::2]:
        raise InvalidContextError(f"the two sides disagree on the counts: {own[0::2]} vs {partner[0::2]}")
    return Context(tuple(own[0::2]), (tuple(own[1::2]), tuple(partner[1::2])))


def _detect_format(first_line: str) -> str:
    if first_line.startswith("<input>"):
        return "corpus-tagged"
    if "," in first_line:
        return "openspiel"
    tokens = first_line.split()
    if len(tokens) == 6:
        return "selfplay"
    if len(tokens) > 6 and ("YOU:" in tokens or "THEM:" in tokens):
        return "corpus-raw"
    raise InvalidContextError(
        "unrecognised context file format: expected selfplay lines ('cnt val cnt val cnt val'), corpus "
        "dialogue lines (data.txt or '<input> ...' files) or OpenSpiel instances ('1,2,3 8,1,0 4,0,2')"
    )


def load_contexts(path: str | Path, *, skip_invalid: bool = False) -> list[Context]:
    """Read contexts from a file, detecting its format from the first non-empty line.

    Formats:

    * ``selfplay.txt``: ``cnt val cnt val cnt val``; consecutive lines are the two sides of one context.
    * corpus dialogue files: raw ``data.txt`` lines (own context, dialogue, outcome, partner context) and
      tagged ``val.txt`` / ``test.txt`` lines (``<input> ... </input> ... <partner_input> ...``). One
      context per line, ``values[0]`` being the line's own side; each dialogue appears in these files
      once from each side, so a context also appears with its roles swapped.
    * OpenSpiel instance files: ``pool values0 values1``, comma-separated, e.g. ``1,2,3 8,1,0 4,0,2``.

    An invalid line raises :class:`InvalidContextError` naming the file, the line and the problem; with
    ``skip_invalid=True`` such lines are left out instead (OpenSpiel's instances include counts of 5,
    which the Deal-or-No-Deal rules do not allow).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no context file at {path}")
    lines = [(n, line.strip()) for n, line in enumerate(path.read_text().splitlines(), start=1)]
    lines = [(n, line) for n, line in lines if line]
    if not lines:
        raise InvalidContextError(f"{path}: the file holds no contexts")
    try:
        fmt = _detect_format(lines[0][1])
    except InvalidContextError as err:
        raise InvalidContextError(f"{path}, line {lines[0][0]}: {err}") from None

    contexts: list[Context] = []

    def add(line_no: int, build) -> None:
        try:
            contexts.append(build())
        except InvalidContextError as err:
            if not skip_invalid:
                raise InvalidContextError(f"{path}, line {line_no}: {err}") from None

    if fmt == "selfplay":
        if len(lines) % 2:
            raise InvalidContextError(f"{path}: selfplay files hold pairs of lines, got an odd count ({len(lines)})")
        for (n0, a), (_, b) in zip(lines[0::2], lines[1::2]):
            add(n0, lambda a=a, b=b: _context_from_cnt_val(_parse_ints(a.split(), "a context"),
                                                           _parse_ints(b.split(), "a context")))
    elif fmt == "openspiel":
        def openspiel(line: str) -> Context:
            parts = line.split()
            if len(parts) != 3:
                raise InvalidContextError("expected 'pool values0 values1', comma-separated")
            pool, v0, v1 = (_parse_ints(p.split(","), "an instance") for p in parts)
            return Context(tuple(pool), (tuple(v0), tuple(v1)))
        for n, line in lines:
            add(n, lambda line=line: openspiel(line))
    elif fmt == "corpus-tagged":
        def tagged(line: str) -> Context:
            try:
                own = line.split("<input>")[1].split("</input>")[0].split()
                partner = line.split("<partner_input>")[1].split("</partner_input>")[0].split()
            except IndexError:
                raise InvalidContextError("expected <input> ... </input> and <partner_input> ... </partner_input>") from None
            return _context_from_cnt_val(_parse_ints(own, "<input>"), _parse_ints(partner, "<partner_input>"))
        for n, line in lines:
            add(n, lambda line=line: tagged(line))
    else:  # corpus-raw
        def raw(line: str) -> Context:
            tokens = line.split()
            if len(tokens) < 12:
                raise InvalidContextError("expected own context, dialogue, outcome and partner context")
            return _context_from_cnt_val(_parse_ints(tokens[:6], "the own context"),
                                         _parse_ints(tokens[-6:], "the partner context"))
        for n, line in lines:
            add(n, lambda line=line: raw(line))
    if not contexts:
        raise InvalidContextError(f"{path}: no valid contexts in the file")
    return contexts
