"""ripieno.bench.step: the numbers exist, are finite and the command's JSON has the contract's keys (no timing asserts)."""

from __future__ import annotations

import json
import math

import pytest

from ripieno.bench import step as bench_step
from ripieno.model.checkpoint import CheckpointError


def test_run_reports_the_contract_keys():
    out = bench_step.run("random:1x32", events=200, seed=1)
    json.dumps(out)
    for key in ("p50_us", "p99_us", "floor_us", "naive_refeed_us"):
        assert math.isfinite(out[key]) and out[key] > 0, key
    assert out["p99_us"] >= out["p50_us"] and out["layers"] == 1 and out["hidden"] == 32


def test_bad_model_spec_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        bench_step.run(str(tmp_path / "missing.safetensors"), events=10)
    with pytest.raises(CheckpointError, match="random:LxH"):
        bench_step.run("random:0x32", events=10)
