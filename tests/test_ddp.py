"""`fit` under torchrun: two CPU processes (gloo) train one model; rank 0 alone writes it; eval reads it."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ripieno.model import checkpoint
from test_fit import write_folder

BIN = Path(sys.executable).parent


@pytest.mark.integration
def test_torchrun_two_cpu_processes_write_one_checkpoint_that_eval_reads(tmp_path: Path) -> None:
    midi = write_folder(tmp_path / "midi", 7)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RIPIENO_CACHE": str(tmp_path / "cache")}
    cmd = [
        BIN / "torchrun", "--standalone", "--nproc_per_node", "2", "-m", "ripieno.training.cli", "fit",
        "--midi", str(midi), "--out", str(out), "--epochs", "3", "--hidden", "16", "--layers", "1",
        "--tbptt", "6", "--batch", "2", "--no-progress", "--val-fraction", "0.3", "--test-fraction", "0",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    json_lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(json_lines) == 1  # rank 0 alone reports
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 2 and math.isfinite(summary["val_pitch_nll"])
    assert summary["replicas_identical"] is True  # gradients really were all-reduced
    assert sorted(p.name for p in out.iterdir()) == ["last.pt", "loss.png", "metrics.csv", "model.safetensors"]
    ck = checkpoint.load(summary["checkpoint"])
    assert ck.meta["world_size"] == 2 and ck.config.hidden == 16
    assert (out / "metrics.csv").read_text().count("\n") == 1 + summary["epochs"]

    ev = subprocess.run(
        [BIN / "ripieno-train", "eval", "--model", summary["checkpoint"], "--midi", str(midi), "--json", "--no-progress"],
        capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip
    assert ev.returncode == 0, ev.stderr[-2000:]
    result = json.loads(ev.stdout.strip().splitlines()[-1])
    assert result["files"] == 7 and result["events"] > 0 and math.isfinite(result["pitch_nll"])
