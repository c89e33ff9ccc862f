"""One arena for scripted partners, trained policies, language models behind chat endpoints and people.

Players are named by spec strings (:func:`parse_player`)::

    boulware                          a scripted partner (parley.agents.partners.scripted)
    policy:runs/ppo                   a saved policy or training run (parley.agents.load_policy)
    chat:http://127.0.0.1:8000/v1#m   model ``m`` behind an OpenAI-compatible endpoint (parley.agents.llm)
    lm:runs/lm                        a dialogue model written by ``parley train-lm`` (text protocol only)
    NAME=SPEC                         any of these under a display name

:func:`run_arena` plays every pair of players on one shared pool of contexts, each context twice with
the seats swapped (same context, same first-moving seat; the players trade places), so each player of
a pair meets exactly the games the other met. ``protocol="acts"`` plays the coarse game through
:func:`parley.envs.play.play_batch` (chat players answer in JSON); ``protocol="text"`` plays the text
game of :mod:`parley.envs.negotiation_text_v0` (coarse players through the realiser, chat players in
words). Every game is one row of ``results.csv`` in the output folder: both players' names and seats,
scores, the deal, the context, the first mover. A rerun with the same settings plays only the games
the file lacks, so an interrupted arena resumes; new players add only their pairs.

Ratings (:func:`rate`) are Bradley--Terry strengths fitted with ``choix`` on the games' outcomes (in
each game the player who scored more wins; equal scores are a draw, counted as half a win each; a
player whose move the text game refused loses), on the Elo scale (400 / ln 10 per unit, mean 1000),
with percentile bootstrap confidence intervals over the games. :func:`write_report` writes
``leaderboard.md`` (ratings with intervals and the :data:`parley.agents.evaluation.MEASURES` of each
player over all its games) and ``leaderboard.png`` (ratings with intervals, and each pair's win rate).

Games played by people in the study app join the same ratings: ``parley arena --study-db`` reads them
with :func:`parley.human_eval.service.study_games` and passes them to :func:`write_report`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from parley.envs.negotiation import DEFAULT_MAX_TURNS, context_ids, sample_context_arrays

__all__ = ["PLAYER_KINDS", "PROTOCOLS", "ArenaError", "PlayerSpec", "parse_player", "parse_players", "build_player",
           "ArenaSettings", "play_pair", "run_arena", "read_results", "rate", "Rating", "write_report",
           "RESULT_COLUMNS"]

PLAYER_KINDS = {"scripted": "a scripted partner's name (the prefix may be left out)",
                "policy": "policy:PATH, a saved policy or training run",
                "chat": "chat:URL#MODEL, a model behind an OpenAI-compatible endpoint",
                "lm": "lm:PATH, a dialogue model written by `parley train-lm` (text protocol only)"}
PROTOCOLS = ("acts", "text")
#: Environment variable read for the chat players' API key.
API_KEY_ENV = "PARLEY_CHAT_API_KEY"
RESULT_COLUMNS = ["pair", "game", "context", "context_id", "counts", "values0", "values1", "first_player",
                  "player0", "player1", "score0", "score1", "agreement", "deal", "pareto_optimal", "turns",
                  "bad_input", "protocol", "source"]
SETTINGS_FILE = "arena.json"
RESULTS_FILE = "results.csv"
ELO_SCALE = 400 / math.log(10)


class ArenaError(ValueError):
    """A player spec, setting or results folder the arena cannot use; the message says what is allowed."""


# --------------------------------------------------------------------------------------------------
# Players
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlayerSpec:
    """A parsed player spec: ``kind`` (:data:`PLAYER_KINDS`), its ``target`` (name, path or URL), the
    chat ``model``, and the display ``name``."""

    kind: str
    target: str
    name: str
    model: str | None = None
    spec: str = ""


def parse_player(spec: str) -> PlayerSpec:
    """A :class:`PlayerSpec` from a spec string (see the module docstring); raises :class:`ArenaError`
    for an unknown kind or scripted name, a missing folder, or a bad URL."""
    from parley.agents.partners.scripted import PARTNERS

    if not isinstance(spec, str) or not spec.strip():
        raise ArenaError("a player spec must be a non-empty string such as 'boulware' or 'policy:runs/ppo'")
    text = spec.strip()
    name = None
    head, eq, rest = text.partition("=")
    if eq and ":" not in head and "/" not in head and head.strip():
        name, text = head.strip(), rest.strip()
    kind, colon, target = text.partition(":")
    if not colon:
        kind, target = "scripted", text
    kind = kind.strip().lower()
    target = target.strip()
    if kind not in PLAYER_KINDS:
        allowed = "; ".join(f"{k}: {v}" for k, v in PLAYER_KINDS.items())
        raise ArenaError(f"unknown player kind {kind!r} in {spec!r}; kinds are {allowed}")
    model = None
    if kind == "scripted":
        if target not in PARTNERS:
            raise ArenaError(f"unknown scripted partner {target!r} in {spec!r}; scripted partners are "
                             f"{', '.join(PARTNERS)} (or use policy:PATH, chat:URL#MODEL, lm:PATH)")
        default = target
    elif kind in ("policy", "lm"):
        path = Path(target)
        if not target or not path.exists():
            raise ArenaError(f"{spec!r}: no folder at {target!r}; {kind}: takes an existing "
                             f"{'saved policy or training run' if kind == 'policy' else 'language model'} folder")
        if kind == "lm":
            from parley.agents.lm.model import is_language_model_dir

            if not is_language_model_dir(path):
                raise ArenaError(f"{spec!r}: {target!r} is not a language model folder (written by `parley train-lm`)")
        default = path.resolve().name
    else:
        url, hash_, model = target.partition("#")
        if not hash_ or not model.strip():
            raise ArenaError(f"{spec!r}: a chat player is chat:URL#MODEL, e.g. chat:http://127.0.0.1:8000/v1#boulware")
        from parley.agents.llm import ChatClient

        try:
            ChatClient(url.strip(), model.strip())
        except ValueError as err:
            raise ArenaError(f"{spec!r}: {err}") from None
        target, model = url.strip(), model.strip()
        default = model
    return PlayerSpec(kind, target, name or default, model, spec.strip())


def parse_players(specs: str | Sequence[str]) -> list[PlayerSpec]:
    """Specs from a comma-separated string or a list; display names are made unique (``name#2``)."""
    items = [s for s in (specs.split(",") if isinstance(specs, str) else specs) if str(s).strip()]
    if len(items) < 2:
        raise ArenaError(f"an arena needs at least two players, got {len(items)}")
    parsed, seen = [], {}
    for item in items:
        player = parse_player(item)
        seen[player.name] = seen.get(player.name, 0) + 1
        if seen[player.name] > 1:
            player = PlayerSpec(player.kind, player.target, f"{player.name}#{seen[player.name]}", player.model,
                                player.spec)
        parsed.append(player)
    return parsed


def build_player(player: PlayerSpec, protocol: str, *, seed: int = 0, log_dir: Path | None = None,
                 concurrency: int = 8, max_turns: int = DEFAULT_MAX_TURNS):
    """The playing object: a coarse-act Policy for ``"acts"``, a text player for ``"text"``."""
    if protocol not in PROTOCOLS:
        raise ArenaError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if player.kind == "chat":
        from parley.agents.llm import ChatAgent

        log = None if log_dir is None else Path(log_dir) / f"{_file_name(player.name)}.jsonl"
        agent = ChatAgent(player.target, player.model, api_key=os.environ.get(API_KEY_ENV),
                          mode="json" if protocol == "acts" else "chat", name=player.name, log_path=log,
                          concurrency=concurrency)
        agent.seed(seed)
        return agent
    if protocol == "acts":
        if player.kind == "lm":
            raise ArenaError(f"{player.spec!r}: a dialogue model plays only the text game; use --protocol text")
        if player.kind == "scripted":
            from parley.agents.partners.scripted import make_partner

            return make_partner(player.target, seed=seed)
        from parley.agents import load_policy

        policy = load_policy(player.target)
        if callable(getattr(policy, "seed", None)):
            policy.seed(seed)
        return policy
    from parley.text import make_text_player

    target = player.target
    if player.kind == "policy" and target in _scripted_names():  # a folder that shadows a partner name
        target = str(Path(target).resolve())
    built = make_text_player(target, seed=seed, max_turns=max_turns)
    built.name = player.name
    return built


def _scripted_names() -> set[str]:
    from parley.agents.partners.scripted import PARTNERS

    return set(PARTNERS)


def _file_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


# --------------------------------------------------------------------------------------------------
# Playing
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArenaSettings:
    """What fixes an arena's games: protocol, games per pair (each context twice), seed, limits."""

    protocol: str = "acts"
    games: int = 200
    seed: int = 0
    max_turns: int = DEFAULT_MAX_TURNS
    max_messages: int = 20

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ArenaError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.games < 2 or self.games % 2:
            raise ArenaError(f"games per pair must be even and at least 2 (each context is played twice, the "
                             f"seats swapped), got {self.games}")
        if self.max_turns < 1 or self.max_messages < 1:
            raise ArenaError("max_turns and max_messages must be at least 1")

    def contexts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The shared pool: counts (C, 3), values (C, 2, 3), first movers (C,) for C = games / 2."""
        rng = np.random.default_rng(self.seed)
        counts, values = sample_context_arrays(rng, self.games // 2)
        return counts, values, rng.integers(2, size=self.games // 2)


def _seed_for(seed: int, *keys: int) -> int:
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


def _pair_key(a: str, b: str) -> str:
    return f"{a} vs {b}"


def _pair_seed(settings: ArenaSettings, a: PlayerSpec, b: PlayerSpec, *keys: int) -> int:
    """A seed fixed by the pair's names (not its place in the player list), so resumed games repeat."""
    return _seed_for(settings.seed, zlib.crc32(_pair_key(a.name, b.name).encode()), *keys)


def _split(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split())


def _words(values: Iterable[int]) -> str:
    return " ".join(str(int(v)) for v in values)


def _game_layout(settings: ArenaSettings, game: int) -> tuple[int, bool]:
    """Game ``game`` of a pair plays context ``game mod C``; the second half has the seats swapped."""
    half = settings.games // 2
    return game % half, game >= half


def _rows_acts(settings: ArenaSettings, a: PlayerSpec, b: PlayerSpec, games: Sequence[int],
               cache: dict, **build) -> list[dict]:
    from parley.envs.play import play_batch

    counts, values, first = settings.contexts()
    players = []
    for seat, spec in enumerate((a, b)):
        key = ("acts", spec)
        if spec.kind == "scripted" or key not in cache:  # scripted partners are cheap: fresh, seeded per pair
            cache[key] = build_player(spec, "acts", seed=_pair_seed(settings, a, b, seat),
                                      max_turns=settings.max_turns, **build)
        elif callable(getattr(cache[key], "seed", None)):
            cache[key].seed(_pair_seed(settings, a, b, seat))
        players.append(cache[key])
    # The whole pair is played (its games share the players' random streams) and the asked-for games kept,
    # so a resumed pair repeats the games an interrupted run played; a pair is written in one go, so
    # only a damaged file leaves one half done.
    wanted = set(int(g) for g in games)
    games = list(range(settings.games))
    layout = [_game_layout(settings, g) for g in games]
    ctx = np.array([c for c, _ in layout])
    swapped = np.array([s for _, s in layout])
    seating = np.where(swapped[:, None], [[1, 0]], [[0, 1]])
    batch = play_batch(players, counts[ctx], values[ctx], first[ctx], seating=seating, max_turns=settings.max_turns)
    metrics = batch.metrics
    ids = context_ids(counts[ctx], values[ctx])
    rows = []
    for k, game in enumerate(games):
        if game not in wanted:
            continue
        names = (a.name, b.name) if not swapped[k] else (b.name, a.name)
        agreed = bool(batch.agreed[k])
        rows.append({
            "pair": _pair_key(a.name, b.name), "game": int(game), "context": int(ctx[k]), "context_id": int(ids[k]),
            "counts": _words(counts[ctx[k]]), "values0": _words(values[ctx[k], 0]),
            "values1": _words(values[ctx[k], 1]), "first_player": int(first[ctx[k]]),
            "player0": names[0], "player1": names[1],
            "score0": float(metrics["scores"][k, 0]), "score1": float(metrics["scores"][k, 1]),
            "agreement": int(agreed), "deal": _words(batch.agreed_split[k]) if agreed else "",
            "pareto_optimal": int(bool(metrics["pareto_optimal"][k])) if agreed else "",
            "turns": int(batch.turns[k]), "bad_input": "", "protocol": "acts", "source": "arena",
        })
    return rows


def _rows_text(settings: ArenaSettings, a: PlayerSpec, b: PlayerSpec, games: Sequence[int],
               cache: dict, on_game: Callable[[dict], None] | None = None, **build) -> list[dict]:
    from parley.envs.negotiation import Context
    from parley.envs.negotiation_text_v0 import TextInputError, TextNegotiationState

    counts, values, first = settings.contexts()
    players = []
    for spec in (a, b):
        key = ("text", spec)
        if key not in cache:
            cache[key] = build_player(spec, "text", seed=settings.seed, max_turns=settings.max_turns, **build)
        players.append(cache[key])
    ids = context_ids(counts, values)
    rows = []
    for game in games:
        for seat, player in enumerate(players):  # seeded per game, so a resumed game repeats
            if callable(getattr(player, "seed", None)):
                player.seed(_pair_seed(settings, a, b, seat, int(game)))
        c, swapped = _game_layout(settings, game)
        seated = players[::-1] if swapped else players
        names = (b.name, a.name) if swapped else (a.name, b.name)
        ctx = Context(tuple(int(x) for x in counts[c]), (tuple(int(x) for x in values[c, 0]),
                                                         tuple(int(x) for x in values[c, 1])))
        state = TextNegotiationState(ctx, first_player=int(first[c]), max_messages=settings.max_messages)
        bad_input = ""
        while not state.terminal:
            mover = state.current_player
            try:
                state.send(seated[mover].reply(state.observation(mover)))
            except TextInputError:
                bad_input, state.terminal = str(mover), True
        info = state.metrics()
        deal = None if bad_input else info["deal"]
        scores = (0.0, 0.0) if bad_input else tuple(float(s) for s in info["scores"])
        row = {
            "pair": _pair_key(a.name, b.name), "game": int(game), "context": int(c), "context_id": int(ids[c]),
            "counts": _words(counts[c]), "values0": _words(values[c, 0]), "values1": _words(values[c, 1]),
            "first_player": int(first[c]), "player0": names[0], "player1": names[1],
            "score0": scores[0], "score1": scores[1], "agreement": int(deal is not None),
            "deal": "" if deal is None else _words(deal),
            "pareto_optimal": "" if deal is None else int(bool(info["pareto_optimal"])),
            "turns": int(info["messages"]), "bad_input": bad_input, "protocol": "text", "source": "arena",
        }
        rows.append(row)
        if on_game is not None:
            on_game(row)
    return rows


def play_pair(settings: ArenaSettings, a: PlayerSpec, b: PlayerSpec, games: Sequence[int],
              cache: dict | None = None, on_game: Callable[[dict], None] | None = None,
              **build: Any) -> list[dict]:
    """Rows of ``games`` (indices within the pair, 0..games-1) of ``a`` against ``b``."""
    cache = {} if cache is None else cache
    if not games:
        return []
    if settings.protocol == "acts":
        return _rows_acts(settings, a, b, games, cache, **build)
    return _rows_text(settings, a, b, games, cache, on_game=on_game, **build)


def _ray_pair(settings_dict: dict, a: dict, b: dict, games: list[int], build: dict) -> list[dict]:
    return play_pair(ArenaSettings(**settings_dict), PlayerSpec(**a), PlayerSpec(**b), games, **build)


def read_results(path: str | Path) -> list[dict]:
    """The rows of a ``results.csv`` (numbers as numbers); [] when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            for key in ("game", "context", "context_id", "first_player", "agreement", "turns"):
                row[key] = int(row[key])
            row["score0"], row["score1"] = float(row["score0"]), float(row["score1"])
            rows.append(row)
    return rows


def _check_settings(out: Path, settings: ArenaSettings) -> None:
    file = out / SETTINGS_FILE
    wanted = asdict(settings)
    if file.exists():
        found = json.loads(file.read_text())
        if found != wanted:
            diff = ", ".join(f"{k}: {found.get(k)!r} there, {v!r} now" for k, v in wanted.items() if found.get(k) != v)
            raise ArenaError(f"{out} holds an arena with other settings ({diff}); rerun with the same settings to "
                             "resume it, or give another --out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps(wanted, indent=2) + "\n")


def run_arena(players: Sequence[str | PlayerSpec], out: str | Path, settings: ArenaSettings = ArenaSettings(), *,
              address: str | None = None, concurrency: int = 8,
              progress: Callable[[int, int, str], None] | None = None) -> list[dict]:
    """Play every pair's missing games and append them to ``out/results.csv``; returns every row.

    ``address``: a Ray cluster (``"auto"`` or ``host:port``) to play the pairs on in parallel.
    ``progress(done, total, label)`` is called after each pair (coarse acts) or game (text).
    """
    specs = [p if isinstance(p, PlayerSpec) else parse_player(p) for p in players]
    specs = parse_players([s.spec for s in specs]) if all(s.spec for s in specs) else specs
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ArenaError(f"player names must be unique, got {names}")
    if settings.protocol == "acts":
        for spec in specs:
            if spec.kind == "lm":
                raise ArenaError(f"{spec.spec!r}: a dialogue model plays only the text game; use --protocol text")
    out = Path(out)
    _check_settings(out, settings)
    results = out / RESULTS_FILE
    existing = read_results(results)
    done = {(r["pair"], r["game"]) for r in existing if r.get("source", "arena") == "arena"}
    pairs = [(i, j) for i in range(len(specs)) for j in range(i + 1, len(specs))]
    work = []
    for i, j in pairs:
        key = _pair_key(names[i], names[j])
        missing = [g for g in range(settings.games) if (key, g) not in done]
        if missing:
            work.append((specs[i], specs[j], missing))
    total = sum(len(m) for *_, m in work) if settings.protocol == "text" else len(work)
    build = {"log_dir": out / "logs", "concurrency": concurrency}
    new_file = not results.exists()
    handle = results.open("a", newline="")
    writer = csv.DictWriter(handle, fieldnames=RESULT_COLUMNS)
    if new_file:
        writer.writeheader()
    rows = list(existing)
    count = 0

    def record(batch: list[dict], label: str, step: int) -> None:
        nonlocal count
        writer.writerows(batch)
        handle.flush()
        rows.extend(batch)
        count += step
        if progress is not None:
            progress(count, total, label)

    try:
        if address and work:
            import ray

            if not ray.is_initialized():
                ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
            remote = ray.remote(_ray_pair)
            futures = {remote.remote(asdict(settings), asdict(a), asdict(b), missing, build): (a, b, missing)
                       for a, b, missing in work}
            pending = list(futures)
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                a, b, missing = futures[ready[0]]
                record(ray.get(ready[0]), _pair_key(a.name, b.name),
                       len(missing) if settings.protocol == "text" else 1)
        else:
            cache: dict = {}
            for a, b, missing in work:
                label = _pair_key(a.name, b.name)
                if settings.protocol == "text":
                    play_pair(settings, a, b, missing, cache,
                              on_game=lambda row, label=label: record([row], label, 1), **build)
                else:
                    record(play_pair(settings, a, b, missing, cache, **build), label, 1)
    finally:
        handle.close()
    return rows


# --------------------------------------------------------------------------------------------------
# Ratings and the report
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rating:
    """One player's rating (Elo scale) with its bootstrap interval and its measures over all its games."""

    player: str
    rating: float
    low: float
    high: float
    games: int
    wins: float  # decisive wins plus half the draws
    score: float
    partner_score: float
    joint: float
    agreement: float
    pareto: float
    turns: float


def _outcomes(rows: Sequence[dict], index: dict[str, int]) -> np.ndarray:
    """(G, 3): player in seat 0, player in seat 1, result for seat 0 (1 win, 0.5 draw, 0 loss)."""
    table = np.zeros((len(rows), 3))
    for k, row in enumerate(rows):
        if row.get("bad_input", "") not in ("", None):
            result = 0.0 if str(row["bad_input"]) == "0" else 1.0
        else:
            result = 1.0 if row["score0"] > row["score1"] else 0.0 if row["score0"] < row["score1"] else 0.5
        table[k] = index[row["player0"]], index[row["player1"]], result
    return table


def _fit(n: int, table: np.ndarray, alpha: float) -> np.ndarray:
    """Bradley--Terry strengths (mean 0) with choix from a dense win matrix; a draw is half a win each way."""
    try:
        import choix
    except ImportError:
        raise ImportError("arena ratings need choix: pip install 'parley[arena]' (or pip install choix)") from None
    first, second, result = table[:, 0].astype(int), table[:, 1].astype(int), table[:, 2]
    wins = np.zeros((n, n))
    np.add.at(wins, (first, second), result)
    np.add.at(wins, (second, first), 1.0 - result)
    params = choix.ilsr_pairwise_dense(wins, alpha=alpha)
    return params - params.mean()


def rate(rows: Sequence[dict], *, bootstrap: int = 200, seed: int = 0, alpha: float = 0.01,
         confidence: float = 0.95) -> list[Rating]:
    """Ratings of every player in ``rows``, best first (see the module docstring)."""
    if not rows:
        raise ArenaError("no games to rate")
    names = sorted({r["player0"] for r in rows} | {r["player1"] for r in rows})
    index = {name: i for i, name in enumerate(names)}
    table = _outcomes(rows, index)
    strengths = _fit(len(names), table, alpha)
    rng = np.random.default_rng(seed)
    samples = np.array([_fit(len(names), table[rng.integers(len(table), size=len(table))], alpha)
                        for _ in range(bootstrap)]) if bootstrap > 0 else strengths[None]
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail], axis=0)
    ratings = []
    for name, i in index.items():
        seat0, seat1 = table[:, 0] == i, table[:, 1] == i
        mine = np.concatenate([[r["score0"] for r, s in zip(rows, seat0) if s], [r["score1"] for r, s in zip(rows, seat1) if s]])
        theirs = np.concatenate([[r["score1"] for r, s in zip(rows, seat0) if s],
                                 [r["score0"] for r, s in zip(rows, seat1) if s]])
        played = [r for r, a, b in zip(rows, seat0, seat1) if a or b]
        deals = [r for r in played if r["agreement"]]
        pareto = [int(r["pareto_optimal"]) for r in deals if r["pareto_optimal"] not in ("", None)]
        wins = float(table[seat0, 2].sum() + (1 - table[seat1, 2]).sum())
        ratings.append(Rating(
            player=name, rating=1000 + ELO_SCALE * strengths[i], low=1000 + ELO_SCALE * low[i],
            high=1000 + ELO_SCALE * high[i], games=len(played), wins=wins, score=float(mine.mean()),
            partner_score=float(theirs.mean()), joint=float((mine + theirs).mean()),
            agreement=float(np.mean([r["agreement"] for r in played])),
            pareto=float(np.mean(pareto)) if pareto else math.nan,
            turns=float(np.mean([r["turns"] for r in played]))))
    return sorted(ratings, key=lambda r: -r.rating)


def _pair_matrix(rows: Sequence[dict], names: Sequence[str]) -> np.ndarray:
    """(P, P) share of games player i won against player j (draws half), NaN where they did not meet."""
    index = {n: i for i, n in enumerate(names)}
    wins = np.zeros((len(names), len(names)))
    games = np.zeros_like(wins)
    for a, b, r in _outcomes(rows, index):
        a, b = int(a), int(b)
        wins[a, b] += r
        wins[b, a] += 1 - r
        games[a, b] += 1
        games[b, a] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(games > 0, wins / games, np.nan)


def _number(x: float, digits: int = 2) -> str:
    return "-" if isinstance(x, float) and math.isnan(x) else f"{x:.{digits}f}"


def leaderboard_markdown(ratings: Sequence[Rating], rows: Sequence[dict], *, title: str = "Arena") -> str:
    """The leaderboard table (and the pairwise win-rate table) in Markdown."""
    protocols = sorted({r.get("protocol", "") for r in rows})
    sources = sorted({r.get("source", "arena") for r in rows})
    lines = [f"# {title}", "",
             f"{len(rows)} games ({', '.join(protocols)}; from {', '.join(sources)}). Rating: Bradley-Terry on "
             "who scored more in each game (draws half), Elo scale, mean 1000, 95% bootstrap interval. Measures "
             "over each player's games in both seats.", "",
             "| # | player | rating | 95% interval | games | win % | score | partner score | joint | "
             "agreement % | Pareto % | turns |",
             "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k, r in enumerate(ratings, 1):
        lines.append(f"| {k} | {r.player} | {r.rating:.0f} | {r.low:.0f} to {r.high:.0f} | {r.games} | "
                     f"{100 * r.wins / r.games:.1f} | {_number(r.score)} | {_number(r.partner_score)} | "
                     f"{_number(r.joint)} | {100 * r.agreement:.1f} | "
                     f"{_number(100 * r.pareto, 1) if not math.isnan(r.pareto) else '-'} | {_number(r.turns, 1)} |")
    names = [r.player for r in ratings]
    matrix = _pair_matrix(rows, names)
    lines += ["", "Win rate of the row player against the column player (%):", "",
              "| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for i, name in enumerate(names):
        cells = ["" if i == j or math.isnan(matrix[i, j]) else f"{100 * matrix[i, j]:.0f}" for j in range(len(names))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_leaderboard(ratings: Sequence[Rating], rows: Sequence[dict], path: str | Path) -> Path:
    """Ratings with their intervals beside the pairwise win-rate matrix, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.player for r in ratings]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.45 * len(names) + 2.5),
                                      gridspec_kw={"width_ratios": [1, 1.2]})
    y = np.arange(len(names))[::-1]
    values = np.array([r.rating for r in ratings])
    errors = np.array([[r.rating - r.low for r in ratings], [r.high - r.rating for r in ratings]])
    left.errorbar(values, y, xerr=errors, fmt="o", capsize=3)
    left.set_yticks(y, names)
    left.set_xlabel("rating (Elo scale, 95% bootstrap interval)")
    left.axvline(1000, color="grey", lw=0.5)
    matrix = _pair_matrix(rows, names)
    image = right.imshow(matrix * 100, cmap="RdBu", vmin=0, vmax=100)
    right.set_xticks(range(len(names)), names, rotation=45, ha="right")
    right.set_yticks(range(len(names)), names)
    right.set_title("win % of row vs column")
    fig.colorbar(image, ax=right, fraction=0.046)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(rows: Sequence[dict], out: str | Path, *, bootstrap: int = 200, seed: int = 0,
                 plot: bool = True) -> list[Rating]:
    """Rate ``rows`` and write ``leaderboard.md`` (and ``leaderboard.png``) into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ratings = rate(rows, bootstrap=bootstrap, seed=seed)
    (out / "leaderboard.md").write_text(leaderboard_markdown(ratings, rows))
    if plot:
        plot_leaderboard(ratings, rows, out / "leaderboard.png")
    return ratings
