"""`ripieno-train bench`: the JSON contract, and `--batching auto` following what the bench measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ripieno.training.batching_choice import measured_batching, save_measurement
from ripieno.training.fit import resolve_batching

BIN = Path(sys.executable).parent
KEYS = {
    "device", "packed_tokens_per_s", "padded_tokens_per_s", "naive_tokens_per_s", "default_batching", "default_tokens_per_s",
    "tbptt_peak_mb_1x", "tbptt_peak_mb_4x", "full_bptt_peak_mb_1x", "full_bptt_peak_mb_4x",
}  # fmt: skip


def test_bench_quick_json_has_every_figure(tmp_path: Path) -> None:
    env = {**os.environ, "RIPIENO_CACHE": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([BIN / "ripieno-train", "bench", "--quick", "--json", "--threads", "1"], capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert KEYS <= set(result)
    assert result["device"] == "cpu" and result["default_batching"] in ("packed", "padded")
    for k in KEYS - {"device", "default_batching"}:
        assert isinstance(result[k], float) and result[k] >= 0, k
    for k in ("packed_tokens_per_s", "padded_tokens_per_s", "naive_tokens_per_s", "default_tokens_per_s"):
        assert result[k] > 0, k
    # full BPTT keeps every step's activations: 4x the length needs visibly more than 1x
    assert result["full_bptt_peak_mb_4x"] > result["full_bptt_peak_mb_1x"]
    assert result["details"]["quick"] is True
    assert not (tmp_path / "batching.json").exists()  # quick runs are not remembered


def test_auto_batching_follows_the_measurement_for_this_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert measured_batching(cpu, tmp_path) is None
    save_measurement(cpu, {"faster": "packed", "packed_tokens_per_s": 2.0, "padded_tokens_per_s": 1.0}, tmp_path)
    assert measured_batching(cpu, tmp_path) == "packed"
    monkeypatch.setenv("RIPIENO_CACHE", str(tmp_path))
    assert resolve_batching("auto", cpu)[0] == "packed"
    assert resolve_batching("padded", cpu) == ("padded", "requested")
    monkeypatch.setenv("RIPIENO_CACHE", str(tmp_path / "empty"))
    assert resolve_batching("auto", cpu)[0] == "padded"  # unmeasured CPU: the measured default
    (tmp_path / "batching.json").write_text("not json")
    assert measured_batching(cpu, tmp_path) is None
