"""The fit loop: it learns, keeps the best checkpoint with its meta, resumes, stops early, and the CLI contract."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ripieno.model import checkpoint
from ripieno.model.network import ModelConfig
from ripieno.training.fit import FitConfig, FitError, fit, learning_rate

torch.set_num_threads(1)

TINY = ModelConfig(hidden=24, layers=1, pitch_embed=8, embed=4, cond_embed=4, head_hidden=8, dropout=0.0)
BIN = Path(sys.executable).parent


def phrase_piece(shift: int, repeats: int = 4) -> np.ndarray:
    """A 6-note phrase in beats, one 3/4 bar long, repeated: fully predictable after its first bar."""
    pitches = [60, 62, 64, 65, 67, 64]
    steps = [0.5, 0.25, 0.25, 0.5, 0.5, 1.0]
    pos = np.mod(np.cumsum(steps), 3.0)
    rows = [(p + shift, s, s * 0.9, 80, 0, x, 3.0) for _ in range(repeats) for p, s, x in zip(pitches, steps, pos)]
    return np.asarray(rows, dtype=np.float32)


def quick(**kw) -> FitConfig:
    base = dict(epochs=40, batch=4, tbptt=8, lr=2e-2, warmup_steps=5, patience=100, progress=False, batching="padded")
    return FitConfig(**{**base, **kw})


def test_a_tiny_model_overfits_a_tiny_set(tmp_path: Path) -> None:
    pieces = [phrase_piece(s) for s in (0, 5)]
    # encoding 2's 22 input columns (metre, sounding lead notes) make 24 hidden units learn this slowly
    # (0.35-0.66 nats after 60 epochs over seeds 0-2); 48 units for 80 epochs: 0.01-0.17 over seeds 0-7
    model = dataclasses.replace(TINY, hidden=48)
    result = fit(pieces, pieces, tmp_path / "run", model, quick(epochs=80, tbptt=12, lr=2e-2), {"corpus": ["synthetic"]})
    assert result.stopped == "epochs" and result.epochs == 80 and result.world_size == 1
    # from ln(128) = 4.85 nats; only the second note of each piece is not fully determined
    assert result.val_pitch_nll < 0.3
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert len(rows) == 80
    first, last = rows[0], rows[-1]
    for head in ("pitch", "step", "duration", "velocity"):
        assert float(last[f"train_{head}"]) < float(first[f"train_{head}"]) / 2, head
    assert float(last["val_total"]) == pytest.approx(sum(float(last[f"val_{h}"]) for h in ("pitch", "step", "duration", "velocity")), rel=1e-4)


def test_best_checkpoint_loads_with_its_meta_and_the_run_dir_is_complete(tmp_path: Path) -> None:
    pieces = [phrase_piece(s) for s in (0, 3)]
    result = fit(pieces, [phrase_piece(1)], tmp_path, TINY, quick(epochs=3), {"midi": "/somewhere", "split": {"val_fraction": 0.1, "test_fraction": 0.1}})
    ck = checkpoint.load(result.checkpoint)
    assert ck.config == TINY
    meta = ck.meta
    assert meta["data"]["midi"] == "/somewhere" and meta["data"]["split"]["val_fraction"] == 0.1
    assert meta["fit"]["tbptt"] == 8 and meta["fit"]["batching"] == "padded"
    assert meta["epochs"] == meta["best_epoch"] == result.best_epoch
    assert meta["metrics"]["val_pitch"] == pytest.approx(result.val_pitch_nll, abs=1e-5)
    assert meta["encoding"] == TINY.encoding.to_dict() and meta["world_size"] == 1
    assert meta["timings"]["seconds"] > 0
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_continues_the_run_and_a_finished_run_is_not_overwritten(tmp_path: Path) -> None:
    pieces = [phrase_piece(s) for s in (0, 4)]
    first = fit(pieces, pieces, tmp_path, TINY, quick(epochs=2))
    with pytest.raises(FitError, match="--resume"):
        fit(pieces, pieces, tmp_path, TINY, quick(epochs=4))
    resumed = fit(pieces, pieces, tmp_path, TINY, quick(epochs=4), resume=True)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert int(rows[2]["step"]) > int(rows[1]["step"])  # the step counter (and LR schedule) carried on
    assert resumed.epochs == 4 and resumed.val_pitch_nll < first.val_pitch_nll
    with pytest.raises(FitError, match="nothing to resume"):
        fit(pieces, pieces, tmp_path / "elsewhere", TINY, quick(), resume=True)


def test_early_stopping_when_validation_stops_improving(tmp_path: Path) -> None:
    pieces = [phrase_piece(0, repeats=40)]  # 239 predicted notes: enough validation to stop on (MIN_VAL_NOTES)
    result = fit(pieces, pieces, tmp_path, TINY, quick(lr=1e-12, warmup_steps=1, patience=2, epochs=30))
    assert result.stopped == "early-stop" and result.epochs == 3 and result.best_epoch == 1


def test_time_budget_stops_after_validating(tmp_path: Path) -> None:
    pieces = [phrase_piece(s) for s in range(8)]
    result = fit(pieces, pieces, tmp_path, TINY, quick(max_minutes=1e-6, epochs=50))
    assert result.stopped == "time" and result.epochs == 1 and checkpoint.load(result.checkpoint)


def test_learning_rate_warms_up_then_decays_to_its_floor() -> None:
    cfg = FitConfig(lr=1.0, warmup_steps=10, min_lr_fraction=0.1)
    lrs = [learning_rate(s, 110, cfg) for s in range(111)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[110] == pytest.approx(0.1) and lrs[60] == pytest.approx(0.55)


def test_time_budget_moves_the_schedule_along_when_time_runs_ahead_of_steps() -> None:
    cfg = FitConfig(lr=1.0, warmup_steps=10, min_lr_fraction=0.1)
    assert learning_rate(20, 1000, cfg, time_fraction=0.5) == pytest.approx(0.55)  # time is further along
    assert learning_rate(20, 1000, cfg, time_fraction=1.0) == pytest.approx(0.1)
    assert learning_rate(510, 1010, cfg, time_fraction=0.1) == pytest.approx(0.55)  # steps are further along
    assert learning_rate(5, 1000, cfg, time_fraction=0.9) == pytest.approx(0.6)  # warmup is warmup


def test_bad_settings_are_one_clear_error() -> None:
    with pytest.raises(FitError, match="batching"):
        FitConfig(batching="sparse")
    with pytest.raises(FitError, match="tbptt"):
        FitConfig(tbptt=0)
    with pytest.raises(FitError, match="bar_dropout"):
        FitConfig(bar_dropout=1.5)


# -------------------------------------------------------------------------------------- CLI


def write_folder(folder: Path, n: int) -> Path:
    from ripieno.training.midi_io import write_midi

    folder.mkdir(parents=True)
    for i in range(n):
        write_midi(folder / f"tune{i:02d}.mid", phrase_piece(i % 7, repeats=3))
    return folder


def test_cli_fit_last_line_is_the_json_contract(tmp_path: Path) -> None:
    midi = write_folder(tmp_path / "midi", 12)
    (midi / "broken.mid").write_bytes(b"MThd\x00\x00garbage")
    out = tmp_path / "run"
    args = ["fit", "--midi", str(midi), "--out", str(out), "--epochs", "2", "--hidden", "16", "--layers", "1", "--tbptt", "8", "--batch", "4", "--no-progress", "--val-fraction", "0.2", "--tie-weights"]
    proc = subprocess.run([BIN / "ripieno-train", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(summary["checkpoint"]) == (out / "model.safetensors").resolve() and summary["world_size"] == 1
    assert math.isfinite(summary["val_pitch_nll"])
    assert "broken.mid" in proc.stderr
    ck = checkpoint.load(summary["checkpoint"])
    assert ck.config.hidden == 16 and ck.config.layers == 1 and ck.config.tie_weights
    meta = ck.meta
    assert meta["data"]["midi"] == str(midi.resolve()) and meta["data"]["pieces"] == 12
    assert meta["data"]["duplicates_removed"] == 5  # tunes 7..11 repeat tunes 0..4
    assert meta["data"]["train_pieces"] + meta["data"]["val_pieces"] + meta["data"]["test_pieces"] == 7


@pytest.mark.parametrize(
    "args, message",
    [
        (["--midi", "/no/such/dir"], "no such directory"),
        (["--midi", ".", "--batch", "0"], "batch must be >= 1"),
    ],
)
def test_cli_fit_bad_input_is_one_line_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    proc = subprocess.run([BIN / "ripieno-train", "fit", *args, "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr


def test_a_tiny_validation_split_turns_early_stopping_off_and_says_so(tmp_path, caplog):
    """A handful of files: one validation piece cannot tell a better epoch from noise (issue: training stopped after 5 s)."""
    import logging

    from ripieno.training.fit import FitConfig, fit, unigram_nll

    rng = np.random.default_rng(0)
    piece = lambda n: np.stack([rng.integers(60, 72, n), np.full(n, 0.5), np.full(n, 0.5), np.full(n, 80), np.zeros(n), np.arange(n) * 0.5 % 4, np.full(n, 4.0)], 1).astype(np.float32)  # noqa: E731
    train, val = [piece(40) for _ in range(3)], [piece(12)]
    with caplog.at_level(logging.WARNING, logger="ripieno.training.fit"):
        result = fit(train, val, tmp_path / "run", TINY, FitConfig(epochs=4, patience=1, batch=2, tbptt=16, lr=1e-4, seed=0))
    assert result.epochs == 4 and result.stopped == "epochs"  # patience 1 would otherwise stop at the first worse epoch
    assert any("too small to stop on" in r.message for r in caplog.records)
    assert any("no better than the pitch frequencies alone" in r.message for r in caplog.records)  # lr 1e-4, 4 epochs: worse than unigram
    assert unigram_nll(train, val) < math.log(128)


def test_bundle_on_another_corpus_needs_out_so_the_bundled_model_stays(caplog) -> None:
    from ripieno.training import bundle

    weights = bundle._weights_dir() / "default.safetensors"
    before = weights.stat().st_mtime_ns
    assert bundle.main(["--corpus", "bach"]) == 2
    assert "needs --out" in caplog.text
    assert weights.stat().st_mtime_ns == before
