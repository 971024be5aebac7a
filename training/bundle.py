"""Rebuild the bundled default model from scratch: `python -m ripieno.training.bundle`.

One command, three steps, all from music21's public-domain corpus (CORPUS below, or --corpus; the
corpus cache is built first if missing, ~4 minutes):
1. `ripieno-train fit` with the settings below (time-boxed: the learning-rate schedule is
   fitted to --max-minutes, the best epoch on validation is kept);
2. `training.online_fit`: the Stream's online blend fitted on the validation split, the
   corpus Markov-3 of the training split stored in the checkpoint -> <out>/default.safetensors;
3. the rival's tables (`training.markov --save`) next to it -> <out>/default.baseline.npz, so
   `ripieno-train eval --model default` needs no corpus.
Under 45 minutes on a 2-core CPU with the default --max-minutes. The last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path

CORPUS = ("essenFolksong", "bach", "airdsAirs", "miscFolk")
# What the bundled model is trained with (MODEL.md explains the choices).
FIT_ARGS = (
    "--hidden", "256", "--layers", "2", "--batch", "32", "--lr", "3e-3", "--transpose", "4",
    "--epochs", "100", "--patience", "4", "--seed", "0",
)

log = logging.getLogger(__name__)


def _weights_dir() -> Path:
    from importlib import resources

    return Path(str(resources.files("ripieno.model.weights")))


def main(argv: list[str] | None = None) -> int:
    from ripieno.training import cli, markov, online_fit

    ap = argparse.ArgumentParser(prog="python -m ripieno.training.bundle", description="Rebuild the bundled default model; last stdout line JSON.")
    ap.add_argument("--out", type=Path, default=None, help="where default.safetensors and default.baseline.npz go (default: the package's model/weights)")
    ap.add_argument("--work", type=Path, default=None, help="training run directory (default: runs/bundle-<date>-<time>)")
    ap.add_argument("--max-minutes", type=float, default=30.0, help="training time box (the whole rebuild adds ~5 minutes)")
    ap.add_argument("--corpus", nargs="+", default=list(CORPUS), metavar="NAME",
                    help=f"music21 corpus collections to train on (default: {' '.join(CORPUS)}); leave one out to measure"
                         " the same recipe on a tradition it never heard (give --out then: the bundled files stay)")
    args = ap.parse_args(argv)
    if tuple(args.corpus) != CORPUS and args.out is None:
        log.error("--corpus other than the bundle's (%s) needs --out: the bundled model must not be replaced by it", " ".join(CORPUS))
        return 2
    out = args.out or _weights_dir()
    work = args.work or Path("runs") / time.strftime("bundle-%Y%m%d-%H%M%S")
    started = time.monotonic()
    fit_argv = ["fit", "--corpus", *args.corpus, "--out", str(work), *FIT_ARGS, "--max-minutes", str(args.max_minutes), "--no-progress"]
    if cli.main(fit_argv) != 0:
        return 2
    out.mkdir(parents=True, exist_ok=True)
    model = out / "default.safetensors"
    if online_fit.main(["--model", str(work / "model.safetensors"), "--out", str(model)]) != 0:
        return 2
    if markov.main(["--corpus", *args.corpus, "--save", str(out / "default.baseline.npz")]) != 0:
        return 2
    summary = {
        "checkpoint": str(model),
        "bytes": model.stat().st_size,
        "file_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "baseline": str(out / "default.baseline.npz"),
        "run": str(work),
        "minutes": round((time.monotonic() - started) / 60, 1),
        "command": "python -m ripieno.training.bundle " + " ".join(argv if argv is not None else []),
    }
    print(json.dumps(summary))  # noqa: T201 - CLI result
    return 0


if __name__ == "__main__":
    raise SystemExit(main(__import__("sys").argv[1:]))
