"""music21's bundled corpus as Pieces: converted once, in parallel, into a cache of arrays.

Parsing scores is slow (music21: ~13 ms per Essen tune, ~0.1-0.3 s per Bach chorale), so every
unit of work (one score file, or a chunk of the tunes of an Essen .abc collection) is converted
once into an .npz keyed by its corpus path, its mtime and size, and EVENTS_FORMAT; later runs
only read arrays. What is stored is the score's own time: quarter-note onsets and durations,
each note's part, and its bar (bar line, bar length, the metre's beat); `pieces_of` turns them
into beat-timed Pieces, a score of several parts twice (the whole texture as the lead; the top
part as the lead over the others as accompaniment). Scores rarely carry a tempo: the first
metronome mark is kept when present (for writing MIDI back), otherwise DEFAULT_QPM.

O'Neill's (`oneills1850`) and Ryan's Mammoth Collection (`ryansMammoth`) are reserved for an
independent held-out evaluation: they are refused by name and filtered out by path, here, in
code, and never parsed.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import re
import warnings
import zipfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ripieno.training.pieces import DEFAULT_VELOCITY, Piece, events_from_notes

log = logging.getLogger(__name__)

EVENTS_FORMAT = 2  # bump when the conversion below changes what it writes
DEFAULT_QPM = 100.0  # quarter notes per minute when a score gives no tempo
RESERVED = ("oneills1850", "ryansMammoth")  # held-out evaluation only: never parsed here
SCORE_SUFFIXES = (".abc", ".mxl", ".xml", ".musicxml", ".krn", ".mid", ".midi")
TUNES_PER_UNIT = 100  # Essen .abc files hold up to ~700 tunes: chunk them to balance workers


class CorpusError(Exception):
    """A corpus request that cannot be served; str() is the one line for the user."""


def default_cache_dir() -> Path:
    """$RIPIENO_CACHE or ~/.cache/ripieno."""
    env = os.environ.get("RIPIENO_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ripieno"


def is_reserved(text: str | os.PathLike[str]) -> bool:
    """True for a name or path that mentions a reserved collection anywhere (case-insensitive)."""
    low = str(text).lower()
    return any(r.lower() in low for r in RESERVED)


def _music21():
    """music21 is an optional extra (only training from its corpus needs it): say how to get it."""
    try:
        import music21
    except ModuleNotFoundError:
        raise CorpusError("the music21 corpus needs music21: pip install 'ripieno[corpus]' (make install does)") from None
    return music21


def _corpus_root() -> Path:
    return Path(_music21().__path__[0]) / "corpus"


def corpus_sources(names: Sequence[str]) -> list[Path]:
    """Score files of music21's corpus for each name (a folder such as essenFolksong, bach, mozart)."""
    m21corpus = _music21().corpus

    if isinstance(names, str):
        names = [names]
    out: list[Path] = []
    for name in names:
        if is_reserved(name):
            raise CorpusError(f"corpus {name!r} is reserved for the independent held-out evaluation and is never used here")
        found = [Path(p) for p in m21corpus.getComposer(name)]
        found = sorted(p for p in found if p.suffix.lower() in SCORE_SUFFIXES and not is_reserved(p))
        if not found:
            raise CorpusError(f"corpus {name!r} names no scores in music21's corpus (try essenFolksong, bach, mozart, beethoven)")
        out.extend(found)
    return sorted(set(out))


@dataclass(frozen=True)
class Unit:
    """One piece of conversion work and its cache file: a score, or a chunk of an .abc file's tunes."""

    path: str
    rel: str
    chunk: int | None  # index of the TUNES_PER_UNIT chunk of an .abc file, None for a whole file
    key: str

    def cache_file(self, cache_dir: Path) -> Path:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.rel)
        part = "" if self.chunk is None else f"-{self.chunk}"
        return cache_dir / f"{stem}{part}-{self.key[:16]}.npz"


def split_abc(text: str) -> list[tuple[str, str]]:
    """(tune number, tune text) for each `X:` tune of an ABC collection, the file header prepended."""
    blocks = re.split(r"(?m)^(?=X:)", text)
    header, tunes = blocks[0], blocks[1:]
    out = []
    for i, t in enumerate(tunes):
        m = re.match(r"X:\s*(\S+)", t)
        out.append((m.group(1) if m else str(i + 1), header + t))
    return out


def _read_abc(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def plan_units(paths: Iterable[Path]) -> list[Unit]:
    root = _corpus_root()
    units = []
    for path in paths:
        st = path.stat()
        try:
            rel = path.relative_to(root).as_posix()
        except ValueError:
            rel = path.name
        chunks: list[int | None] = [None]
        if path.suffix.lower() == ".abc":
            n = len(split_abc(_read_abc(path)))
            chunks = list(range((n + TUNES_PER_UNIT - 1) // TUNES_PER_UNIT))
        for chunk in chunks:
            key = hashlib.sha256(f"{EVENTS_FORMAT}|{rel}|{st.st_mtime_ns}|{st.st_size}|{chunk}|{DEFAULT_QPM}".encode()).hexdigest()
            units.append(Unit(str(path), rel, chunk, key))
    return units


# --- conversion of one score (runs in the worker processes) ---------------------------------


def beat_quarters(numerator: int, denominator: int) -> float:
    """The metre's beat in quarter notes: a dotted quarter in 6/8, 9/8 and 12/8, else the denominator's note."""
    if denominator == 8 and numerator in (6, 9, 12):
        return 1.5
    return 4.0 / denominator


def _bars(part: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bar line offset, bar length, beat) in quarter notes for each measure of a part; a pickup
    bar's line lies before its first note (so an upbeat sits late in its bar)."""
    from music21 import meter

    measures = list(part.getElementsByClass("Measure"))  # type: ignore[attr-defined]
    first_ts = next(iter(part.recurse().getElementsByClass(meter.TimeSignature)), None)  # type: ignore[attr-defined]
    ts = first_ts
    starts, lengths, beats = [], [], []
    for i, m in enumerate(measures):
        ts = m.timeSignature or ts
        num, den = (ts.numerator, ts.denominator) if ts is not None else (4, 4)
        bar_q = float(ts.barDuration.quarterLength) if ts is not None else 4.0
        start = float(m.offset)
        pad = float(m.paddingLeft or 0.0)
        if pad > 0:
            start -= pad
        elif i == 0 and float(m.duration.quarterLength) < bar_q - 1e-6:
            start -= bar_q - float(m.duration.quarterLength)
        starts.append(start)
        lengths.append(bar_q)
        beats.append(beat_quarters(num, den))
    if not starts:  # no measures: 4/4 from the start
        return np.zeros(1), np.full(1, 4.0), np.ones(1)
    return np.asarray(starts), np.asarray(lengths), np.asarray(beats)


def score_arrays(score: object) -> dict[str, np.ndarray] | None:
    """Every note of a music21 score in quarter notes, with its part and its bar; None if it has no notes.

    Stored as the corpus cache; `pieces_of` turns them into Pieces (beats and roles).
    """
    from music21 import tempo

    s = score.stripTies()  # type: ignore[attr-defined]
    flat = s.flatten()
    marks = [float(mm.getQuarterBPM()) for mm in flat.getElementsByClass(tempo.MetronomeMark) if mm.getQuarterBPM()]
    qpm = marks[0] if marks and marks[0] > 0 else DEFAULT_QPM
    parts = list(s.parts) or [s]
    bar_start, bar_len, beat = _bars(parts[0])
    cols: dict[str, list] = {k: [] for k in ("onset_q", "duration_q", "pitch", "velocity", "part")}
    for k, part in enumerate(parts):
        for n in part.flatten().notes:
            ql = float(n.duration.quarterLength)
            if ql <= 0 or n.duration.isGrace:
                continue
            v = n.volume.velocity  # None unless the score gives a dynamic to this note
            for p in getattr(n, "pitches", ()):
                midi = int(round(p.ps))
                if 0 <= midi <= 127:
                    cols["onset_q"].append(float(n.offset))
                    cols["duration_q"].append(ql)
                    cols["pitch"].append(midi)
                    cols["velocity"].append(int(v) if v else DEFAULT_VELOCITY)
                    cols["part"].append(k)
    if len(cols["pitch"]) < 2:
        return None
    on = np.asarray(cols["onset_q"])
    m = np.clip(np.searchsorted(bar_start, on + 1e-6, side="right") - 1, 0, len(bar_start) - 1)
    return {
        "onset_q": on.astype(np.float32),
        "duration_q": np.asarray(cols["duration_q"], np.float32),
        "pitch": np.asarray(cols["pitch"], np.int16),
        "velocity": np.asarray(cols["velocity"], np.int16),
        "part": np.asarray(cols["part"], np.int16),
        "bar_start_q": bar_start[m].astype(np.float32),
        "bar_q": bar_len[m].astype(np.float32),
        "beat_q": beat[m].astype(np.float32),
        "qpm": np.full(len(on), qpm, np.float32),
    }


NOTE_ARRAYS = ("onset_q", "duration_q", "pitch", "velocity", "part", "bar_start_q", "bar_q", "beat_q", "qpm")


def beat_axis(onset_q: np.ndarray, bar_start_q: np.ndarray, bar_q: np.ndarray, beat_q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(onset in beats, position in the bar in beats, bar length in beats) of each note.

    Beats are counted bar by bar, so a change of metre (3/4 to 6/8) changes the beat's length
    from that bar on and a piece's beats stay continuous.
    """
    pos = (onset_q - bar_start_q) / beat_q
    bar = bar_q / beat_q
    starts, first = np.unique(bar_start_q, return_index=True)
    bar_b = np.concatenate([[0.0], np.cumsum(np.diff(starts) / beat_q[first][:-1])])
    onset_b = bar_b[np.searchsorted(starts, bar_start_q)] + pos
    return onset_b, pos, bar


def pieces_of(pid: str, source: str, a: dict[str, np.ndarray]) -> list[Piece]:
    """The Pieces one converted score gives: its whole texture as the lead, and, for part music,
    its top part as the lead with the other parts as the accompaniment (roles), sharing one group."""
    onset_b, pos, bar = beat_axis(a["onset_q"].astype(np.float64), a["bar_start_q"].astype(np.float64), a["bar_q"].astype(np.float64), a["beat_q"].astype(np.float64))
    dur_b = a["duration_q"].astype(np.float64) / a["beat_q"].astype(np.float64)
    qpm = float(a["qpm"][0]) if len(a["qpm"]) else DEFAULT_QPM
    beat_q = float(a["beat_q"][0]) if len(a["beat_q"]) else 1.0
    solo, _ = events_from_notes(onset_b, a["pitch"], dur_b, a["velocity"], 0, pos, bar)
    out = [Piece(pid, source, solo, group=pid, qpm=qpm, beat_q=beat_q)]
    if len(np.unique(a["part"])) > 1:
        role = (a["part"] != a["part"].min()).astype(np.int64)
        parts, _ = events_from_notes(onset_b, a["pitch"], dur_b, a["velocity"], role, pos, bar)
        out.append(Piece(f"{pid}@parts", source, parts, group=pid, qpm=qpm, beat_q=beat_q))
    return out


def _scores_of(unit: Unit) -> list[tuple[str, object]]:
    """(piece id, parsed score or an Exception) for each piece of the unit."""
    from music21 import converter, stream

    path = Path(unit.path)
    out: list[tuple[str, object]] = []
    if unit.chunk is None:
        try:
            parsed = converter.parse(str(path), forceSource=True)
        except Exception as e:  # noqa: BLE001 - music21 raises anything on a bad file
            return [(unit.rel, e)]
        if isinstance(parsed, stream.Opus):
            return [(f"{unit.rel}#{i + 1}", sc) for i, sc in enumerate(parsed.scores)]
        return [(unit.rel, parsed)]
    tunes = split_abc(_read_abc(path))[unit.chunk * TUNES_PER_UNIT : (unit.chunk + 1) * TUNES_PER_UNIT]
    for number, text in tunes:
        pid = f"{unit.rel}#{number}"
        try:
            out.append((pid, converter.parseData(text, format="abc")))
        except Exception as e:  # noqa: BLE001
            out.append((pid, e))
    return out


def convert_unit(unit: Unit, cache_dir: str) -> tuple[str, list[tuple[str, str]]]:
    """Convert one unit into its .npz (atomically); returns the file and the (id, reason) failures."""
    if is_reserved(unit.path):
        raise CorpusError(f"{unit.rel} is reserved and never parsed")
    ids: list[str] = []
    arrays: list[dict[str, np.ndarray]] = []
    failed: list[tuple[str, str]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for pid, sc in _scores_of(unit):
            if isinstance(sc, Exception):
                failed.append((pid, f"{type(sc).__name__}: {sc}".splitlines()[0][:200]))
                continue
            try:
                a = score_arrays(sc)
            except Exception as e:  # noqa: BLE001
                failed.append((pid, f"{type(e).__name__}: {e}".splitlines()[0][:200]))
                continue
            if a is None:
                failed.append((pid, "no notes"))
                continue
            ids.append(pid)
            arrays.append(a)
    out = unit.cache_file(Path(cache_dir))
    lengths = np.array([len(a["pitch"]) for a in arrays], dtype=np.int64)
    cat = {k: (np.concatenate([a[k] for a in arrays]) if arrays else np.zeros(0, np.float32)) for k in NOTE_ARRAYS}
    tmp = out.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(
        tmp,
        ids=np.array(ids, dtype=str),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        failed_ids=np.array([f[0] for f in failed], dtype=str),
        failed_why=np.array([f[1] for f in failed], dtype=str),
        **cat,
    )
    os.replace(tmp, out)
    return str(out), failed


def read_unit(path: Path, source: str) -> tuple[list[Piece], list[tuple[str, str]]]:
    """Pieces and failures stored in one cache file."""
    with np.load(path, allow_pickle=False) as z:
        ids, off = z["ids"], z["offsets"]
        cols = {k: z[k] for k in NOTE_ARRAYS}
        pieces = [p for pid, a, b in zip(ids, off[:-1], off[1:], strict=True) for p in pieces_of(str(pid), source, {k: v[a:b] for k, v in cols.items()})]
        failed = list(zip((str(x) for x in z["failed_ids"]), (str(x) for x in z["failed_why"]), strict=True))
    return pieces, failed


def _convert_star(args: tuple[Unit, str]) -> tuple[str, list[tuple[str, str]]]:
    return convert_unit(*args)


def load_corpus(names: list[str], cache_dir: Path | None = None, workers: int | None = None, progress: bool = True) -> list[Piece]:
    """Pieces of the named music21 corpora, converting what is not cached yet (in parallel).

    Each Essen song is one piece. Unparsable or empty pieces are skipped with a warning each
    and a count at the end. workers=None uses every core; workers=1 converts in this process.
    """
    units = plan_units(corpus_sources(names))
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache = cache / f"corpus-v{EVENTS_FORMAT}"
    cache.mkdir(parents=True, exist_ok=True)
    todo = [u for u in units if not u.cache_file(cache).exists()]
    if todo:
        n = max(1, min(workers or os.cpu_count() or 1, len(todo)))
        log.info("converting %d of %d corpus units with %d worker(s) into %s", len(todo), len(units), n, cache)
        bar = tqdm(total=len(todo), unit="file", desc="corpus", disable=not progress)
        jobs = [(u, str(cache)) for u in todo]
        if n == 1:
            for j in jobs:
                _convert_star(j)
                bar.update()
        else:
            # spawn: the parent may hold torch threads, which forking does not survive
            with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as pool:
                for _ in pool.map(_convert_star, jobs, chunksize=1):
                    bar.update()
        bar.close()
    pieces: list[Piece] = []
    failed: list[tuple[str, str]] = []
    for u in units:
        try:
            got, bad = read_unit(u.cache_file(cache), source=u.rel.split("/")[0])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            log.warning("cache file %s unreadable (%s): converting it again", u.cache_file(cache), e)
            convert_unit(u, str(cache))
            got, bad = read_unit(u.cache_file(cache), source=u.rel.split("/")[0])
        pieces.extend(got)
        failed.extend(bad)
    for pid, why in failed:
        log.warning("skipped %s: %s", pid, why)
    if failed:
        log.warning("%d corpus pieces skipped (unparsable or empty), %d loaded", len(failed), len(pieces))
    log.info("corpus %s: %d pieces, %d notes", ",".join(names), len(pieces), sum(len(p) for p in pieces))
    return pieces


def main(argv: list[str] | None = None) -> int:
    """`python -m ripieno.training.corpus NAME...`: fill the cache; last stdout line is a JSON summary."""
    import argparse
    import json
    import time

    ap = argparse.ArgumentParser(prog="python -m ripieno.training.corpus", description=main.__doc__)
    ap.add_argument("names", nargs="+")
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--export", nargs=2, metavar=("SPLIT", "DIR"), help="also write the deduped train|val|test split as MIDI files into DIR (for `ripieno-train eval --midi DIR`)")
    ap.add_argument("--val-fraction", type=float, default=0.05)
    ap.add_argument("--test-fraction", type=float, default=0.05)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    t0 = time.perf_counter()
    try:
        pieces = load_corpus(args.names, args.cache_dir, args.workers)
    except CorpusError as e:
        log.error("%s", e)
        return 2
    summary = {"names": args.names, "pieces": len(pieces), "notes": int(sum(len(p) for p in pieces)), "seconds": round(time.perf_counter() - t0, 1)}
    if args.export:
        side, folder = args.export
        if side not in ("train", "val", "test"):
            log.error("--export: split must be train, val or test, not %r", side)
            return 2
        summary["exported"] = export_split(pieces, side, Path(folder), args.val_fraction, args.test_fraction)
    print(json.dumps(summary))
    return 0


def export_split(pieces: list[Piece], side: str, folder: Path, val: float = 0.05, test: float = 0.05) -> int:
    """Write one side of fit's split (dedupe, then hash split) as MIDI files named after the piece ids."""
    from ripieno.training.midi_io import write_midi
    from ripieno.training.pieces import dedupe, split

    chosen = split(dedupe(pieces), val=val, test=test)[side]
    folder.mkdir(parents=True, exist_ok=True)
    for p in chosen:
        write_midi(folder / (re.sub(r"[^A-Za-z0-9_.-]+", "_", p.id) + ".mid"), p.events, bpm=p.qpm or DEFAULT_QPM, beat_quarters=p.beat_q)
    log.info("wrote %d %s pieces as MIDI into %s", len(chosen), side, folder)
    return len(chosen)


if __name__ == "__main__":
    raise SystemExit(main())
