"""`ripieno run` through real JACK ports: answers, accompaniment, SIGTERM, hot-plug, garbage and smash.

The keyboard and synth are real JACK clients (tests/peers.py); the model is a tiny untrained
checkpoint, so what it plays is noise, but when and how much it plays is the engine's.
"""

from __future__ import annotations

import json
import random
import signal
import time

import pytest

from peers import Keyboard, Synth, start_wired, wait_until
from tiny_model import tiny_checkpoint

# Known environment flake, handled where it is understood and retried where it is not: on this
# 2-core box the dummy jackd in non-realtime mode now and then leaves a freshly activated client
# that never runs its process cycle. ripieno detects that at start and reopens its clients
# (midi_ports.open_pair), and a jackd that stopped answering is restarted before the next test
# (conftest.jack). A stall of a test peer, or one that begins later in a test, is not detected,
# so each test keeps two more tries on a fresh daemon. A daemon that really never answers still
# fails all three.
pytestmark = pytest.mark.flaky(reruns=2, reruns_delay=1)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")


def config(model, mode="call", input="virtual", output="virtual", silence_s=0.4, extra="") -> str:
    return (f'[midi]\napi = "jack"\ninput = "{input}"\noutput = "{output}"\n'
            f'[engine]\nmode = "{mode}"\nmodel = "{model}"\nsilence_s = {silence_s}\nseed = 5\n{extra}')


def test_call_answers_after_the_rest_not_during_and_sigterm_mid_answer_leaves_nothing_sounding(jack, daemon, keyboard, synth, model):
    d = start_wired(daemon, jack, keyboard, synth, config(model, extra="answer_s = 20.0\n"))
    keyboard.phrase([60, 62, 64, 65, 67, 65, 64, 62], step=0.2, dur=0.15)
    phrase_end = time.monotonic()
    assert synth.note_ons() == [], "ripieno played over the player"
    first = wait_until(synth.note_ons, 5, what="an answer")[0]
    assert first.t - phrase_end >= 0.4 - 0.06  # the rest before it (minus the last note's release gap)
    assert synth.sounding(), "nothing sounding mid-answer"
    assert d.stop(signal.SIGTERM, timeout=2.0) == 0, d.log()
    assert synth.sounding() == set(), synth.messages()
    assert [m.msg for m in synth.messages()[-3:]] == [[0xB0, 64, 0], [0xB0, 123, 0], [0xB0, 120, 0]]
    assert "ripieno:in" not in jack.ports() and "ripieno-out:out" not in jack.ports()


def test_accompany_plays_during_the_phrase(jack, daemon, keyboard, synth, model):
    d = start_wired(daemon, jack, keyboard, synth, config(model, mode="accompany", extra="max_notes_per_s = 40.0\n"))
    keyboard.phrase([60, 62, 64, 65, 67, 65, 64, 62] * 2, step=0.2, dur=0.15)
    during = synth.note_ons()
    assert len(during) >= 2, d.log()[-2000:]
    time.sleep(2.5)
    n = len(synth.note_ons())
    time.sleep(0.5)
    assert len(synth.note_ons()) == n, "still playing long after the player stopped"
    assert synth.sounding() == set()
    assert d.stop(signal.SIGINT) == 0


def test_unplug_and_replug_keyboard_and_synth(jack, daemon, model):
    kbd, syn = Keyboard("hotkbd"), Synth("hotsynth")
    try:
        jack.wait_for_port(kbd.port)
        jack.wait_for_port(syn.port)
        d = daemon(config(model, input="HOTKBD", output="hotsynth", silence_s=0.3))
        d.wait_log("ripieno is up", timeout=60)
        kbd.phrase([60, 64, 67], step=0.15, dur=0.1)
        wait_until(syn.note_ons, 5, what="an answer before unplugging")
        kbd.close()
        syn.close()
        d.wait_log("input port hotkbd:out disappeared", timeout=5)
        d.wait_log("output port hotsynth:in disappeared", timeout=5)
        kbd, syn = Keyboard("hotkbd"), Synth("hotsynth")
        t0 = time.monotonic()
        wait_until(lambda: d.log().count("connected input to hotkbd:out") == 2 and d.log().count("connected output to hotsynth:in") == 2,
                   5, what="reconnection within 5 s")
        assert time.monotonic() - t0 <= 5.0
        kbd.phrase([60, 64, 67], step=0.15, dur=0.1)
        wait_until(syn.note_ons, 5, what="an answer after replugging")
        assert d.stop() == 0
        assert syn.sounding() == set()
    finally:
        kbd.close()
        syn.close()


@pytest.mark.parametrize("gap", [0.05, 0.2])
def test_replugs_faster_than_any_poll_are_rewired_every_time(jack, daemon, model, gap):
    """A keyboard and a synth that vanish and come back within `gap` s, 20 times: each time JACK
    drops ripieno's connection while the name is back before a poll could miss it. Every replug
    is wired again, and the phrase after the last one is answered."""
    kbd, syn = Keyboard("flapkbd"), Synth("flapsynth")
    try:
        d = daemon(config(model, input="flapkbd", output="flapsynth", silence_s=0.3))
        d.wait_log("ripieno is up", timeout=60)
        for _ in range(20):
            kbd.close()
            syn.close()
            time.sleep(gap)
            kbd, syn = Keyboard("flapkbd"), Synth("flapsynth")
            time.sleep(0.02)
        wait_until(lambda: jack.connected("flapkbd:out", "ripieno:in") and jack.connected("ripieno-out:out", "flapsynth:in"),
                   2, what="both connections back after the last replug")
        kbd.phrase([60, 64, 67], step=0.15, dur=0.1)
        wait_until(syn.note_ons, 5, what="an answer after 20 fast replugs")
        assert d.stop() == 0
        assert syn.sounding() == set()
    finally:
        kbd.close()
        syn.close()


def test_a_sysex_without_its_f7_ends_at_the_next_status_byte_and_the_notes_after_it_are_heard(jack, daemon, keyboard, synth, model):
    d = start_wired(daemon, jack, keyboard, synth, config(model, silence_s=0.3))
    keyboard.send([0xF0, 0x7D, 1, 2])  # no F7, ever
    keyboard.phrase([60, 62, 64, 65], step=0.2, dur=0.15)
    wait_until(synth.note_ons, 5, what="an answer to the notes after a broken sysex")
    assert d.stop() == 0


def test_garbage_and_a_smash_neither_crash_nor_flood_and_the_next_phrase_is_answered(jack, daemon, keyboard, synth, model):
    # Garbage may legitimately hit the controllers mapped to commands (glued into one running-status
    # blob, data bytes become CC20/CC21): unmap them, this test is about robustness, not steering.
    no_cc = "[midi.cc]\ntemperature = 0\nsilence_s = 0\nmode = 0\nenabled = 0\n"
    d = start_wired(daemon, jack, keyboard, synth, config(model, silence_s=0.5) + no_cc)
    rng = random.Random(1)
    garbage = [[0xF0, 1, 2, 3, 0xF7], [0xF8] * 1, [62, 100], [0x80, 61, 0], [0x90, 61, 0], [0xE0, 0, 64], [0xC0, 5], [0xD0, 9], [0xF0, 1, 2]]
    for _ in range(300):
        keyboard.send(rng.choice(garbage))
        keyboard.send([0xB0 | rng.randrange(16), rng.choice([2, 7, 10, 74]), rng.randrange(128)])
        keyboard.send([0xF8])
    for _ in range(200):
        keyboard.send([rng.randrange(128), rng.randrange(128)])  # orphan data bytes
    keyboard.send([0xF0, 1, 2])  # a broken sysex: the next status byte ends it
    keyboard.send([0x90, 70, 100])
    keyboard.send([0x80, 70, 0])
    keyboard.send([0xF0, 3, 0xF7])
    time.sleep(0.3)
    synth.clear()
    t_end = time.monotonic() + 1.0
    k = 0
    while time.monotonic() < t_end:  # ~1,500 notes in a second on all channels
        ch, p = rng.randrange(16), rng.randrange(128)
        keyboard.send([0x90 | ch, p, rng.randrange(1, 128)])
        keyboard.send([0x80 | ch, p, 0])
        k += 1
        time.sleep(0.0006)
    time.sleep(3.5)
    assert k >= 1000
    assert len(synth.note_ons()) <= 36, f"{len(synth.note_ons())} notes answered a smash"
    assert synth.sounding() == set()
    synth.clear()
    keyboard.phrase([60, 62, 64, 65, 67], step=0.2, dur=0.15)
    wait_until(synth.note_ons, 5, what="an answer to the phrase after the smash")
    assert d.proc.poll() is None
    assert d.stop() == 0


@pytest.mark.slow
def test_a_lost_note_off_stops_blocking_answers_30_s_after_its_press_while_the_player_plays_on(jack, daemon, keyboard, synth, model):
    """Issue #15: one lost release silenced call mode for as long as the player kept playing (0 of
    12 phrases answered over 51 s: the stale-key clock restarted at every key). Now the key stops
    counting 30 s after its own press, whatever else is played."""
    d = start_wired(daemon, jack, keyboard, synth, config(model, silence_s=0.3))
    lost = time.monotonic()
    keyboard.send([0x90, 50, 90])  # its note-off never comes
    answered_at = None
    while time.monotonic() - lost < 38.0 and answered_at is None:
        synth.clear()
        keyboard.phrase([60, 62, 64], step=0.2, dur=0.15)
        end = time.monotonic() + 2.5
        while time.monotonic() < end and answered_at is None:
            if synth.note_ons():
                answered_at = time.monotonic() - lost
            time.sleep(0.05)
    assert answered_at is not None, "no answer within 38 s of the lost key's press"
    assert 29.0 <= answered_at <= 36.0, answered_at
    assert d.stop(signal.SIGTERM) == 0


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1])
def test_every_terminating_signal_mid_answer_closes_every_note_first(jack, daemon, keyboard, synth, model, sig):
    """Issue #15: SIGHUP (a closed terminal, a dropped ssh), SIGQUIT and SIGUSR1 killed ripieno in
    ~30 ms with a note left sounding. Each is now a clean stop, as SIGTERM is."""
    d = start_wired(daemon, jack, keyboard, synth, config(model, extra="answer_s = 20.0\n"))
    keyboard.phrase([60, 62, 64, 65, 67, 65], step=0.2, dur=0.15)
    wait_until(synth.sounding, 5, what="an answer sounding")
    assert d.stop(sig, timeout=3.0) == 0, d.log()[-1500:]
    assert synth.sounding() == set(), synth.messages()[-6:]


def test_the_first_thing_a_synth_hears_at_start_is_all_notes_off(jack, daemon, model):
    """Issue #15: after a SIGKILL the dead process's last note kept sounding, because a restarted
    ripieno sent nothing until it played. Now its first messages close everything on its channel."""
    syn = Synth("startsynth")
    try:
        jack.wait_for_port(syn.port)
        d = daemon(config(model, output="startsynth"))
        d.wait_log("ripieno is up")
        wait_until(lambda: len(syn.messages()) >= 3, 5, what="the start-up messages")
        assert [m.msg for m in syn.messages()[:3]] == [[0xB0, 64, 0], [0xB0, 123, 0], [0xB0, 120, 0]], syn.messages()[:5]
        assert d.stop(signal.SIGTERM) == 0
    finally:
        syn.close()


def test_run_writes_its_exit_figures_as_json_when_asked(jack, daemon, keyboard, synth, model, tmp_path):
    """`ripieno run --stats-file PATH`: the structured channel a benchmark reads (not a log line)."""
    path = tmp_path / "stats.json"
    d = daemon(config(model), args=["--stats-file", str(path)])
    jack.wait_for_port("ripieno:in", timeout=60)
    d.wait_log("ripieno is up")
    jack.connect(keyboard.port, "ripieno:in")
    jack.connect("ripieno:out", synth.port)
    keyboard.phrase([60, 62, 64, 65], step=0.2, dur=0.15)
    wait_until(synth.note_ons, 5, what="an answer")
    assert d.stop(signal.SIGTERM) == 0
    stats = json.loads(path.read_text())
    assert stats["notes_in"] == 4 and stats["notes_out"] >= 1 and stats["lateness_us"]["n"] >= 1, stats
    assert {"input_us", "input_dropped"} <= set(stats)
