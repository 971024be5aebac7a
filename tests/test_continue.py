"""`ripieno continue`: same seed same file, another seed another, every note closed, clear errors."""

from __future__ import annotations

import subprocess

import mido
import pytest

from peers import BIN
from tiny_model import tiny_checkpoint


def write_prompt(path, pitches=(60, 62, 64, 65, 67, 65, 64, 62, 60)) -> None:
    mid = mido.MidiFile()
    tr = mido.MidiTrack()
    mid.tracks.append(tr)
    tr.append(mido.Message("note_on", channel=9, note=36, velocity=100, time=0))  # drums: not part of the prompt
    for p in pitches:
        tr.append(mido.Message("note_on", note=p, velocity=80, time=0))
        tr.append(mido.Message("note_off", note=p, velocity=0, time=200))
    mid.save(path)


def closed_notes(path) -> tuple[int, int, set]:
    """(note-ons, note-offs, still open) over the whole file, per channel and pitch."""
    open_: dict = {}
    ons = offs = 0
    for msg in mido.MidiFile(path):
        if msg.type == "note_on" and msg.velocity > 0:
            ons += 1
            open_[(msg.channel, msg.note)] = open_.get((msg.channel, msg.note), 0) + 1
        elif msg.type in ("note_off", "note_on"):
            offs += 1
            open_[(msg.channel, msg.note)] = open_.get((msg.channel, msg.note), 0) - 1
    return ons, offs, {k for k, v in open_.items() if v}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("cont")
    write_prompt(d / "prompt.mid")
    return d, tiny_checkpoint(d / "tiny.safetensors")


def cont(d, model, out, *extra):
    r = subprocess.run([str(BIN / "ripieno"), "continue", str(d / "prompt.mid"), "-o", str(d / out), "--model", str(model), *extra],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return (d / out).read_bytes()


def test_same_seed_same_file_other_seed_other_file_all_notes_closed(setup):
    d, model = setup
    a = cont(d, model, "a.mid", "--seed", "7", "--events", "12", "--png", str(d / "a.png"))
    b = cont(d, model, "b.mid", "--seed", "7", "--events", "12")
    c = cont(d, model, "c.mid", "--seed", "8", "--events", "12")
    assert a == b and a != c
    ons, offs, still_open = closed_notes(d / "a.mid")
    assert ons == offs == 9 + 12 and still_open == set()
    prompt_track, ripieno_track = mido.MidiFile(d / "a.mid").tracks[1:]
    assert sum(m.type == "note_on" for m in prompt_track) == 9  # the prompt comes first, drums dropped
    assert (d / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_accompany_continuation_overlaps_the_prompt(setup):
    d, model = setup
    cont(d, model, "acc.mid", "--seed", "3", "--mode", "accompany")
    ripieno = mido.MidiFile(d / "acc.mid").tracks[2]
    t, first = 0, None
    for m in ripieno:
        t += m.time
        if m.type == "note_on" and first is None:
            first = t
    assert first is not None and first < 9 * 200 * 2  # starts before the prompt's end (in ticks)
    assert closed_notes(d / "acc.mid")[2] == set()


def test_bad_prompt_and_bad_model_are_one_line_errors(setup, tmp_path):
    d, model = setup
    (tmp_path / "junk.mid").write_bytes(b"not midi at all")
    for args in ([str(tmp_path / "junk.mid"), "--model", str(model)], [str(d / "prompt.mid"), "--model", str(tmp_path / "nope.safetensors")]):
        r = subprocess.run([str(BIN / "ripieno"), "continue", *args, "-o", str(tmp_path / "x.mid")], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr


def test_a_unison_on_one_channel_does_not_hold_the_answer_back(setup, tmp_path):
    """Two voices striking one key on one channel (a DAW export of part music) make a zero-length
    note; its release at the press's instant must not leave the key held (which meant 30 s of silence)."""
    d, model = setup
    mid = mido.MidiFile(ticks_per_beat=480)
    tr = mido.MidiTrack()
    mid.tracks.append(tr)
    for p in (60, 62, 64, 65):
        tr.append(mido.Message("note_on", note=p, velocity=80, time=0))
        tr.append(mido.Message("note_on", note=p, velocity=80, time=0))  # the second voice, same key
        tr.append(mido.Message("note_off", note=p, velocity=0, time=240))
        tr.append(mido.Message("note_off", note=p, velocity=0, time=0))
    mid.save(tmp_path / "unison.mid")
    r = subprocess.run([str(BIN / "ripieno"), "continue", str(tmp_path / "unison.mid"), "-o", str(tmp_path / "u.mid"), "--model", str(model),
                        "--seed", "1", "--seconds", "3"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    ripieno = mido.MidiFile(tmp_path / "u.mid").tracks[2]
    t, first = 0, None
    for m in ripieno:
        t += m.time
        if m.type == "note_on" and m.velocity > 0 and first is None:
            first = t
    prompt_end = 4 * 240 / 480 * 0.5  # seconds at 120 bpm
    assert first is not None
    first_s = mido.tick2second(first, 480, 500_000)
    assert prompt_end + 0.8 <= first_s < prompt_end + 0.8 + 1.5, first_s  # silence_s, then the next beat


def _continue(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ripieno"), "continue", *args], capture_output=True, text=True, timeout=120)


def test_a_png_that_cannot_be_written_is_one_line_and_exit_2(setup, tmp_path):
    """Issue #6: an unwritable --png printed matplotlib's 30-line traceback."""
    d, model = setup
    (tmp_path / "a_file").write_text("")
    for png in (tmp_path / "no" / "such" / "dir" / "x.png", tmp_path / "a_file" / "x.png", tmp_path):
        r = _continue(str(d / "prompt.mid"), "-o", str(tmp_path / "out.mid"), "--model", str(model), "--seed", "1", "--events", "4", "--png", str(png))
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        errors = [line for line in lines if line.startswith("ripieno: ")]  # the rest is the log ("seed 1")
        assert len(errors) == 1 and errors[0] == lines[-1] and "Traceback" not in r.stderr, r.stderr
        assert str(png) in errors[0] and "piano roll" in errors[0], r.stderr


def test_an_error_without_a_message_names_its_type(setup, tmp_path):
    """Issue #6: a cut-off MIDI file made mido raise a bare EOFError: "not a readable MIDI file ()"."""
    d, model = setup
    (tmp_path / "cut.mid").write_bytes((d / "prompt.mid").read_bytes()[:20])
    r = _continue(str(tmp_path / "cut.mid"), "-o", str(tmp_path / "out.mid"), "--model", str(model))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "not a readable MIDI file (EOFError)" in r.stderr and "()" not in r.stderr, r.stderr
