"""Opening ripieno's two ports on a real JACK server, including the reopen after a stalled graph."""

from __future__ import annotations

import asyncio
import logging

import pytest

from peers import Keyboard, Synth, wait_until
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


@pytest.mark.parametrize("clock", [False, True])
async def test_clock_messages_reach_the_queue_only_when_asked(jack, keyboard, clock):
    """rtmidi drops timing clock unless told otherwise, and ripieno's own filter drops Start/Stop/
    Continue/SPP: both let them through only for [tempo] source = "midi_clock", stamped like any
    input. Active sensing, MTC quarter frames and clean sysex stay dropped either way."""
    loop = asyncio.get_running_loop()
    midi_in = midi_ports.MidiInput("jack", "virtual", loop, clock=clock)
    try:
        midi_in.open_or_fail()
        jack.connect(keyboard.port, "ripieno:in")
        await asyncio.sleep(0.2)
        sent_at = []
        for msg in ([0xFA], [0xF8], [0xFE], [0xF1, 0x20], [0xF2, 16, 0], [0xF0, 1, 2, 0xF7], [0xFC], [0xFB], [0x90, 60, 100]):
            sent_at.append(keyboard.send(msg))
            await asyncio.sleep(0.01)
        got: list[tuple[float, list[int]]] = []
        while not got or got[-1][1] != [0x90, 60, 100]:
            got.append(await asyncio.wait_for(midi_in.queue.get(), 5))
        await asyncio.sleep(0.1)
        assert midi_in.queue.empty()
        if clock:
            assert [m for _, m in got] == [[0xFA], [0xF8], [0xF2, 16, 0], [0xFC], [0xFB], [0x90, 60, 100]]
            assert all(0 <= t - sent_at[0] < 1.0 for t, _ in got) and [t for t, _ in got] == sorted(t for t, _ in got)
        else:
            assert [m for _, m in got] == [[0x90, 60, 100]]
    finally:
        midi_in.close()


async def test_a_named_keyboard_absent_at_start_is_waited_for_and_connected_when_it_appears(jack, caplog):
    """Issue #4: the keyboard is switched on after the box. open_pair(wait=True) does not fail:
    the input stays unconnected, the log says so once and then every WAIT_LOG_S, and poll()
    connects it when it appears (FOUND, its first connection), its notes reaching the queue."""
    from peers import Keyboard

    caplog.set_level(logging.INFO, logger="ripieno.daemon.midi_ports")
    loop = asyncio.get_running_loop()
    midi_in, midi_out = midi_ports.open_pair("jack", "LATEKBD", "virtual", loop, wait=True)
    kbd = None
    try:
        assert midi_in.peer is None and not midi_in.connected and midi_out.peer == "ripieno:out"
        waiting = [r for r in caplog.records if "no input port matches 'LATEKBD' yet" in r.getMessage()]
        assert len(waiting) == 1 and "waiting" in waiting[0].getMessage()
        t0 = midi_in._next_wait_log - midi_ports.WAIT_LOG_S

        def reminders() -> int:
            return len([r for r in caplog.records if "still waiting for an input port matching 'LATEKBD'" in r.getMessage()])

        for dt, expected in ((1.0, 0), (midi_ports.WAIT_LOG_S - 1, 0), (midi_ports.WAIT_LOG_S + 0.1, 1),
                             (midi_ports.WAIT_LOG_S + 10, 1), (2 * midi_ports.WAIT_LOG_S + 0.2, 2)):
            assert midi_in.poll(now=t0 + dt) is None
            assert reminders() == expected, dt
        kbd = Keyboard("latekbd")
        jack.wait_for_port(kbd.port)
        assert midi_in.poll() is midi_ports.Change.FOUND
        assert midi_in.peer == "latekbd:out" and midi_in.connections == 1
        await asyncio.sleep(0.2)
        for _ in range(50):  # the callback was armed on this first open
            kbd.send([0x90, 60, 100])
            try:
                t, msg = await asyncio.wait_for(midi_in.queue.get(), 0.1)
                break
            except TimeoutError:
                continue
        else:
            raise AssertionError("the late keyboard's note never reached the queue")
        assert msg == [0x90, 60, 100]
        assert midi_in.poll(now=t0 + 10 * midi_ports.WAIT_LOG_S) is None and reminders() == 2  # connected: no reminders
    finally:
        if kbd is not None:
            kbd.close()
        midi_in.close()
        midi_out.close()


async def test_a_graph_change_wakes_the_watcher_and_a_replug_between_polls_is_rewired(jack):
    """The keyboard goes and comes back at once; the watcher polls only every minute here, so only
    JACK's notifications can wake it, and only the wiring check can tell that the name that is
    back has lost its connection: LOST, then FOUND, connected again within a second."""
    loop = asyncio.get_running_loop()
    kbd = Keyboard("wakekbd")
    midi_in = midi_ports.MidiInput("jack", "wakekbd", loop)
    changes: list[midi_ports.Change] = []
    task = None
    try:
        midi_in.open_or_fail()
        task = loop.create_task(midi_ports.watch(lambda: [midi_in], lambda _p, c: changes.append(c), interval=60.0))
        await asyncio.sleep(0.1)
        kbd.close()
        kbd = Keyboard("wakekbd")
        t0 = loop.time()
        while changes[-1:] != [midi_ports.Change.FOUND] and loop.time() - t0 < 1.0:
            await asyncio.sleep(0.01)
        assert changes and changes[0] is midi_ports.Change.LOST and changes[-1] is midi_ports.Change.FOUND, changes
        assert "wakekbd:out" in midi_in.midi.connections()
    finally:
        if task is not None:
            task.cancel()
        midi_in.close()
        kbd.close()
