"""[tempo] source = "link": LinkTempo over aalink, and the one clear line when aalink is missing.

aalink is an optional extra (`pip install 'ripieno[link]'`); `make install` does not bring it, so
the tests against the real package skip without it. Those never enable Link: an enabled Link
session announces itself by multicast on every network interface, and a test sends nothing
beyond this machine. A disabled Link still keeps its own timeline, which is what they measure.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from peers import BIN
from ripieno.daemon import config as cfgmod
from ripieno.daemon import tempo_source
from ripieno.daemon.link import LinkTempo
from ripieno.model.play.tempo import Tempo


class Timeline:
    """An aalink.Link-shaped session timeline on a virtual clock (the other half of LinkTempo's interface)."""

    def __init__(self, clock: list[float], bpm: float = 120.0, beat0: float = 0.0) -> None:
        self.clock, self.tempo, self._beat0, self._t0 = clock, bpm, beat0, clock[0]
        self.enabled, self.num_peers, self.quantum = True, 0, 1.0

    @property
    def beat(self) -> float:
        return self._beat0 + (self.clock[0] - self._t0) * self.tempo / 60.0

    def set_tempo(self, bpm: float) -> None:  # a peer changed the session's tempo
        self._beat0, self._t0, self.tempo = self.beat, self.clock[0], bpm


def test_link_tempo_follows_the_session_and_extrapolates_at_its_tempo():
    clock = [100.0]
    session = Timeline(clock, bpm=120.0, beat0=7.5)
    link: Tempo = LinkTempo(bar_beats=3, link=session, now=lambda: clock[0])
    assert session.quantum == 3  # bars are the quantum every peer shares
    assert link.tempo_bpm == 120.0 and link.bar_beats == 3
    assert link.confidence == 0.0  # alone: ripieno's own metronome, nothing to follow
    session.num_peers = 1
    assert link.confidence == 1.0
    assert link.beat_at(100.0) == pytest.approx(7.5)
    assert link.beat_at(101.0) == pytest.approx(9.5)
    assert link.time_at(9.5) == pytest.approx(101.0)
    assert link.time_at(link.beat_at(123.4)) == pytest.approx(123.4)
    assert link.bar_start(7.5) == 6 and link.bar_start(9.0) == 9
    clock[0] = 110.0
    session.set_tempo(90.0)
    assert link.tempo_bpm == 90.0
    assert link.beat_at(110.0) == pytest.approx(27.5)
    assert link.beat_at(112.0) == pytest.approx(30.5)
    link.onset(110.0, 100)  # the player does not move the session
    assert link.beat_at(110.0) == pytest.approx(27.5)
    session.enabled = True
    link.close()
    assert session.enabled is False and link.confidence == 0.0


def test_missing_aalink_is_one_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "aalink", None)  # import aalink -> ImportError, installed or not
    cfg = cfgmod.parse({"tempo": {"source": "link"}}, "my.toml")
    with pytest.raises(cfgmod.ConfigError) as err:
        tempo_source.check(cfg)
    assert str(err.value) == "my.toml: [tempo] source = \"link\" needs aalink: pip install 'ripieno[link]'"
    tempo_source.check(cfgmod.parse({"tempo": {"source": "midi_clock"}}))  # the others need nothing


def test_run_without_aalink_exits_2_with_one_line_before_opening_anything(tmp_path):
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "aalink.py").write_text("raise ImportError('aalink is hidden for this test')\n")
    cfg = tmp_path / "config.toml"
    cfg.write_text('[midi]\napi = "jack"\n[tempo]\nsource = "link"\n')
    env = os.environ | {"PYTHONPATH": str(hide)}
    r = subprocess.run([str(BIN / "ripieno"), "run", "--config", str(cfg)], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines == [f"ripieno: config error: {cfg}: [tempo] source = \"link\" needs aalink: pip install 'ripieno[link]'"], r.stderr


def test_pyproject_offers_the_link_extra():
    import tomllib

    from peers import REPO

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["link"] == ["aalink"]


async def test_link_tempo_over_the_real_aalink_keeps_time_with_its_session():
    aalink = pytest.importorskip("aalink")
    session = aalink.Link(120.0)  # on this loop; never enabled here (no multicast from a test)
    try:
        link = LinkTempo(bar_beats=4, link=session)
        assert session.quantum == 4 and link.tempo_bpm == pytest.approx(120.0)
        assert link.confidence == 0.0  # not enabled, no peers
        t0 = time.monotonic()
        b0 = link.beat_at(t0)
        await asyncio.sleep(0.3)
        t1 = time.monotonic()
        measured = float(session.beat)  # Link's own beat now (its clock is not time.monotonic)
        assert link.beat_at(t1) == pytest.approx(measured, abs=0.004)  # 2 ms at 120 bpm
        assert (link.beat_at(t1) - b0) / (t1 - t0) * 60.0 == pytest.approx(120.0, rel=0.01)
        assert link.time_at(link.beat_at(t1 + 0.5)) == pytest.approx(t1 + 0.5, abs=1e-6)
        assert link.bar_start(link.beat_at(t1)) % 4 == 0
        session.tempo = 90.0  # what a peer's tempo change looks like to ripieno
        await asyncio.sleep(0.01)
        assert link.tempo_bpm == pytest.approx(90.0)
        link.close()
        assert session.enabled is False
    finally:
        del session
