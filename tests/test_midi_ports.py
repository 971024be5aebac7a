"""Opening ripieno's two ports on a real JACK server, including the reopen after a stalled graph."""

from __future__ import annotations

import asyncio
import logging

import pytest

from peers import Synth, wait_until
from ripieno.daemon import midi_ports


async def test_a_stalled_graph_reopens_both_clients_and_leaks_none(jack, monkeypatch, caplog):
    """Every request counts as stalled here, so open_pair must close and reopen twice, then keep the
    last pair: exactly one ripieno:in and one ripieno-out:out afterwards, both working."""
    monkeypatch.setattr(midi_ports, "STALL_S", -1.0)
    caplog.set_level(logging.WARNING, logger="ripieno.daemon.midi_ports")
    before = set(jack.ports())
    midi_in, midi_out = midi_ports.open_pair("jack", "virtual", "virtual", asyncio.get_running_loop())
    synth = Synth("pairsynth")
    try:
        reopened = [r for r in caplog.records if "reopening" in r.getMessage()]
        assert len(reopened) == midi_ports.OPEN_ATTEMPTS - 1
        ours = sorted(set(jack.ports()) - before - {synth.port})
        assert ours == ["ripieno-out:out", "ripieno:in"], ours
        jack.connect("ripieno:out", synth.port)  # the alias was set again on the new client
        wait_until(lambda: synth.port in jack.ports(), 5, what="the synth port")
        for _ in range(50):
            midi_out.send([0x90, 60, 100])
            await asyncio.sleep(0.02)
            if synth.note_ons():
                break
        assert synth.note_ons(), "the reopened output never played"
    finally:
        synth.close()
        midi_in.close()
        midi_out.close()
        midi_out.close()  # twice is safe
    assert not {"ripieno:in", "ripieno-out:out"} & set(jack.ports())


async def test_no_matching_port_leaves_nothing_open(jack):
    before = set(jack.ports())
    with pytest.raises(midi_ports.ports.MidiSystemError, match="no output port matches"):
        midi_ports.open_pair("jack", "virtual", "no-such-synth", asyncio.get_running_loop())
    assert set(jack.ports()) == before
