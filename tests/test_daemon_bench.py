"""The benchmark commands run and print their JSON contract (numbers are reported, never asserted)."""

from __future__ import annotations

import json
import subprocess

from peers import BIN
from tiny_model import tiny_checkpoint


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_bench_step_prints_its_json():
    r = subprocess.run([str(BIN / "ripieno"), "bench", "step", "--json", "--model", "random:1x32"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert {"p50_us", "p99_us", "floor_us", "naive_refeed_us"} <= set(last_json(r.stdout))


def test_bench_e2e_runs_through_a_private_jackd_and_prints_its_json(tmp_path, jack):
    model = tiny_checkpoint(tmp_path / "tiny.safetensors")
    r = subprocess.run([str(BIN / "ripieno"), "bench", "e2e", "--json", "--model", str(model), "--notes", "8"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    out = last_json(r.stdout)
    keys = {"input_to_output_p50_us", "input_to_output_p99_us", "jitter_p99_us", "jack_floor_us", "added_p99_us"}
    assert keys <= set(out)
    assert out["reactions"] >= 1 and all(out[k] is not None and out[k] > 0 for k in keys), out


def test_bench_soak_prints_finite_blocks():
    r = subprocess.run([str(BIN / "ripieno"), "bench", "soak", "--json", "--model", "random:1x16", "--events", "3000"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = last_json(r.stdout)
    assert out["events"] >= 3000 and out["finite"] is True and len(out["blocks"]) == 10
    assert out["player_notes"] > 0 and out["ripieno_notes"] > 0
    assert out["ghost_notes"] == 0 and out["doubled_notes"] == 0  # no click, no flam, whatever the model samples


def test_bench_soak_live_plays_phrases_through_the_real_daemon_and_leaves_nothing_sounding(tmp_path, jack):
    model = tiny_checkpoint(tmp_path / "tiny.safetensors")
    r = subprocess.run([str(BIN / "ripieno"), "bench", "soak", "--live", "--json", "--model", str(model), "--minutes", "0.25"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    out = last_json(r.stdout)
    assert out["phrases"] >= 2 and out["answered"] >= 1 and out["exit_code"] == 0 and out["left_sounding"] == 0, out
    assert len(out["samples"]) >= 2 and all(s["RssAnon"] > 0 for s in out["samples"])


def test_soak_ears_count_ghost_and_doubled_notes():
    from ripieno.bench.soak import _Ears

    ears = _Ears()
    ears.hear([(0.0, [0x90, 60, 80]), (0.01, [0x80, 60, 0])])  # a 10 ms note: a click
    ears.hear([(0.1, [0x90, 62, 80]), (0.2, [0x90, 62, 80]), (0.5, [0x80, 62, 0])])  # struck again while it sounds
    assert (ears.ghost_notes, ears.doubled_notes) == (1, 1)
