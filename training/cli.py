"""`ripieno-train`: fit, eval and bench. Argument parsing only."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ripieno-train", description="Train and evaluate ripieno models.")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_fit_command(sub)
    add_eval_command(sub)
    add_bench_command(sub)
    from .convert import add_command as add_convert_command

    add_convert_command(sub)
    return p


# ---------------------------------------------------------------------------------------- fit


def add_fit_command(sub: argparse._SubParsersAction) -> None:
    from .fit import FitConfig

    d = FitConfig()
    f = sub.add_parser("fit", help="train a model on MIDI files or music21 corpora", description="Train a NoteLSTM; the last stdout line is a JSON summary.")
    src = f.add_mutually_exclusive_group(required=True)
    src.add_argument("--midi", type=Path, metavar="DIR", help="every .mid/.midi under DIR, recursively")
    src.add_argument("--corpus", nargs="+", metavar="NAMES", help="music21 corpus names (space or comma separated), e.g. essenFolksong bach")
    f.add_argument("--out", type=Path, metavar="RUN_DIR", help="run directory (default: runs/fit-<date>-<time>)")
    f.add_argument("--epochs", type=int, default=d.epochs)
    f.add_argument("--hidden", type=int, default=256, help="LSTM width")
    f.add_argument("--layers", type=int, default=2, help="LSTM layers")
    f.add_argument("--dropout", type=float, default=0.1)
    f.add_argument("--tie-weights", action="store_true", help="pitch output layer shares the pitch input embedding")
    f.add_argument("--tbptt", type=int, default=d.tbptt, help="events per back-propagation chunk; 0 = whole pieces (full BPTT)")
    f.add_argument("--batch", type=int, default=d.batch, help="pieces trained side by side")
    f.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (AdamW, warmup then cosine)")
    f.add_argument("--weight-decay", type=float, default=d.weight_decay)
    f.add_argument("--warmup", type=int, default=d.warmup_steps, metavar="STEPS")
    f.add_argument("--clip", type=float, default=d.clip, help="max gradient norm, 0 = off")
    f.add_argument("--patience", type=int, default=d.patience, help="epochs without validation improvement before stopping")
    f.add_argument("--seed", type=int, default=d.seed)
    f.add_argument("--device", choices=["auto", "cpu", "cuda"], default=d.device)
    f.add_argument("--batching", choices=["auto", "packed", "padded"], default=d.batching, help="auto: what `bench` measured faster on this device")
    f.add_argument("--transpose", type=int, default=d.transpose, metavar="SEMITONES", help="augment: random transposition per piece and epoch")
    f.add_argument("--tempo", type=float, default=d.tempo, metavar="X", help="augment: timing scaled by exp(U(-X, X)) (in beats this leaves the grid; 0 for scores)")
    f.add_argument("--bar-dropout", type=float, default=d.bar_dropout, metavar="P", help="augment: share of pieces per epoch seen without their bars, as the daemon hears a player")
    f.add_argument("--val-fraction", type=float, default=0.05)
    f.add_argument("--test-fraction", type=float, default=0.05)
    f.add_argument("--max-minutes", type=float, default=None, help="stop after this many minutes (the best checkpoint is kept)")
    f.add_argument("--resume", action="store_true", help="continue the run in --out")
    f.add_argument("--no-progress", action="store_true", help="no progress bars")
    f.set_defaults(func=run_fit)


def _fit_pieces(args: argparse.Namespace) -> tuple[dict[str, list], dict]:
    """Train/val/test pieces (deduped, split by id hash) and what to record about them."""
    from .pieces import dedupe, split

    if args.midi is not None:
        from .midi_io import read_midi_dir

        if not args.midi.is_dir():
            raise ValueError(f"--midi {args.midi}: no such directory")
        pieces, sources = read_midi_dir(args.midi), {"midi": str(args.midi.resolve())}
    else:
        from .corpus import load_corpus

        names = [n for arg in args.corpus for n in arg.split(",") if n]
        pieces, sources = load_corpus(names, progress=not args.no_progress), {"corpus": names}
    unique = dedupe(pieces)
    parts = split(unique, val=args.val_fraction, test=args.test_fraction)
    meta = {
        **sources,
        "pieces": len(pieces),
        "duplicates_removed": len(pieces) - len(unique),
        "split": {"method": "sha256 of piece id", "val_fraction": args.val_fraction, "test_fraction": args.test_fraction},
        **{f"{k}_pieces": len(v) for k, v in parts.items()},
        **{f"{k}_notes": int(sum(len(p) for p in v)) for k, v in parts.items()},
    }
    return parts, meta


def run_fit(args: argparse.Namespace) -> int:
    import time

    from ripieno.model.checkpoint import CheckpointError
    from ripieno.model.network import ModelConfig

    from .corpus import CorpusError
    from .fit import FitConfig, FitError, dist_from_env, fit

    log = logging.getLogger("ripieno.training.fit")
    try:
        dist = dist_from_env()
        if not dist.main:  # rank 0 alone reports; the others speak only of problems
            logging.getLogger().setLevel(max(logging.WARNING, logging.getLogger().level))
        if args.out is None and dist.active:
            raise FitError("under torchrun, pass --out RUN_DIR (every rank must write to the same place)")
        out = args.out or Path("runs") / time.strftime("fit-%Y%m%d-%H%M%S")
        cfg = FitConfig(
            epochs=args.epochs, batch=args.batch, tbptt=args.tbptt or None, lr=args.lr, weight_decay=args.weight_decay,
            warmup_steps=args.warmup, clip=args.clip, patience=args.patience, seed=args.seed, device=args.device,
            batching=args.batching, transpose=args.transpose, tempo=args.tempo, bar_dropout=args.bar_dropout, max_minutes=args.max_minutes,
            progress=not args.no_progress,
        )
        if args.hidden < 1 or args.layers < 1 or not 0 <= args.dropout < 1:
            raise FitError("--hidden and --layers must be >= 1 and --dropout in [0, 1)")
        model_config = ModelConfig(hidden=args.hidden, layers=args.layers, dropout=args.dropout, tie_weights=args.tie_weights)
        parts, meta = _fit_pieces(args)
        result = fit(
            [p.events for p in parts["train"]], [p.events for p in parts["val"]], out, model_config, cfg, meta, resume=args.resume,
        )
    except (FitError, CorpusError, CheckpointError, ValueError, OSError) as e:
        log.debug("fit failed", exc_info=True)  # --log-level debug shows where
        log.error("%s", e)
        return 2
    if dist.main:
        print(json.dumps(result.summary()))
    return 0


# --------------------------------------------------------------------------------------- eval


def add_eval_command(sub: argparse._SubParsersAction) -> None:
    from .evaluate import add_arguments, run

    e = sub.add_parser("eval", help="score a model on MIDI files against the unigram and Markov baselines", description="Evaluate a model through its streaming path; the last stdout line is JSON.")
    add_arguments(e)
    e.set_defaults(func=run)


# -------------------------------------------------------------------------------------- bench


def add_bench_command(sub: argparse._SubParsersAction) -> None:
    from .bench import add_arguments, run

    b = sub.add_parser("bench", help="training throughput (packed, padded, naive) and TBPTT memory", description="Measure training; the last stdout line is JSON with --json.")
    add_arguments(b)
    b.set_defaults(func=run)


TRAIN_EXTRA = ("torch", "music21", "tqdm", "matplotlib")


def _missing_train_extra() -> list[str]:
    """The `train` extra's packages this install lacks (a daemon-only `pip install .` has none)."""
    from importlib.util import find_spec

    missing = []
    for name in TRAIN_EXTRA:
        try:
            found = find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def main(argv: list[str] | None = None) -> int:
    missing = _missing_train_extra()
    if missing:
        print(f"ripieno-train: needs the train extra ({', '.join(missing)} missing): pip install 'ripieno[train]' "
              "(with torch==2.13.0 installed first, as make install does)", file=sys.stderr)  # noqa: T201
        return 2
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
