"""MIDI reading against files built byte by byte with mido: every quirk the reader claims to handle."""

from __future__ import annotations

import logging
from pathlib import Path

import mido
import numpy as np
import pytest

from ripieno.training.midi_io import MidiReadError, read_midi, read_midi_dir, write_midi

TPB = 480


def save(path: Path, *tracks: list[mido.Message | mido.MetaMessage], tpb: int = TPB) -> Path:
    mid = mido.MidiFile(type=1, ticks_per_beat=tpb)
    for msgs in tracks:
        mid.tracks.append(mido.MidiTrack(msgs))
    mid.save(str(path))
    return path


def on(note: int, t: int, vel: int = 64, ch: int = 0) -> mido.Message:
    return mido.Message("note_on", note=note, velocity=vel, time=t, channel=ch)


def off(note: int, t: int, ch: int = 0) -> mido.Message:
    return mido.Message("note_off", note=note, velocity=0, time=t, channel=ch)


def test_tempo_map_chords_and_drums(tmp_path: Path) -> None:
    # tempo track: 120 bpm, then 60 bpm from beat 2 (tick 960)
    tempo = [mido.MetaMessage("set_tempo", tempo=500_000, time=0), mido.MetaMessage("set_tempo", tempo=1_000_000, time=960)]
    # quarter notes at beats 0, 1, 2, 3 -> 0, 0.5, 1.0, 2.0 s; a chord at beat 0; a drum hit ignored
    melody = [on(67, 0), on(60, 0, vel=100), off(67, 480), off(60, 0), on(62, 0), off(62, 480), on(64, 0), off(64, 480), on(65, 0), off(65, 480)]
    drums = [on(36, 0, ch=9), off(36, 240, ch=9)]
    ev = read_midi(save(tmp_path / "a.mid", tempo, melody, drums))
    np.testing.assert_array_equal(ev[:, 0], [60, 67, 62, 64, 65])  # onset, then pitch
    np.testing.assert_allclose(ev[:, 1], [0.0, 0.0, 0.5, 0.5, 1.0])  # steps in seconds through the tempo map
    np.testing.assert_allclose(ev[:, 2], [0.5, 0.5, 0.5, 1.0, 1.0])
    np.testing.assert_array_equal(ev[:, 3], [100, 64, 64, 64, 64])
    assert ev.dtype == np.float32 and ev.shape == (5, 5)


def test_velocity_zero_overlaps_and_missing_note_off(tmp_path: Path) -> None:
    msgs = [
        on(60, 0), on(60, 480, vel=0),  # velocity-0 note-on is a note-off: 0.5 s
        on(62, 0), on(62, 240),  # the same key struck again: the first ends at 0.25 s
        off(62, 240),  # ... the second at 0.5 s
        off(62, 0),  # a stray note-off with nothing sounding: ignored
        on(64, 0),  # never released: lasts to the end of the file (end of track at 2.0 s)
        mido.MetaMessage("end_of_track", time=960),
    ]
    ev = read_midi(save(tmp_path / "b.mid", msgs))
    np.testing.assert_array_equal(ev[:, 0], [60, 62, 62, 64])
    np.testing.assert_allclose(ev[:, 1], [0.0, 0.5, 0.25, 0.25])
    np.testing.assert_allclose(ev[:, 2], [0.5, 0.25, 0.25, 1.0])


def test_running_status(tmp_path: Path) -> None:
    # MThd, then one MTrk whose second and third events omit the status byte 0x90
    track = bytes([0x00, 0x90, 60, 80, 0x83, 0x60, 60, 0, 0x00, 64, 70, 0x83, 0x60, 0x80, 64, 0, 0x00, 0xFF, 0x2F, 0x00])
    data = b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big") + TPB.to_bytes(2, "big")
    data += b"MTrk" + len(track).to_bytes(4, "big") + track
    (tmp_path / "rs.mid").write_bytes(data)
    ev = read_midi(tmp_path / "rs.mid")
    np.testing.assert_array_equal(ev[:, 0], [60, 64])
    np.testing.assert_allclose(ev[:, 1:3], [[0.0, 0.5], [0.5, 0.5]])
    np.testing.assert_array_equal(ev[:, 3], [80, 70])


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    ev = np.array([[60, 0, 0.5, 90, 1], [64, 0, 0.5, 80, 1], [60, 0.5, 0.25, 70, 1], [60, 0.25, 0.0, 70, 1]], np.float32)
    write_midi(tmp_path / "c.mid", ev)
    back = read_midi(tmp_path / "c.mid")
    np.testing.assert_allclose(back[:, :4], ev[:, :4], atol=2e-3)


def test_broken_folder_is_survived_with_named_warnings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = save(tmp_path / "good.mid", [on(60, 0), off(60, 480), on(62, 0), off(62, 480)])
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "garbage.midi").write_bytes(b"this is not a midi file at all")
    (tmp_path / "truncated.mid").write_bytes(good.read_bytes()[:20])
    (tmp_path / "zero.mid").write_bytes(b"")
    save(tmp_path / "empty.MID", [mido.MetaMessage("set_tempo", tempo=500_000, time=0)])
    (tmp_path / "notes.txt").write_text("not even looked at")
    with caplog.at_level(logging.WARNING):
        pieces = read_midi_dir(tmp_path)
    assert [p.id for p in pieces] == ["good.mid"]
    text = caplog.text
    for name in ("garbage.midi", "truncated.mid", "zero.mid", "empty.MID"):
        assert name in text
    assert "4 of 5 MIDI files skipped" in text


def test_single_file_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(MidiReadError, match="no such file"):
        read_midi(tmp_path / "missing.mid")
    (tmp_path / "bad.mid").write_bytes(b"MThd\x00\x00")
    with pytest.raises(MidiReadError, match=r"bad\.mid") as e:
        read_midi(tmp_path / "bad.mid")
    assert "\n" not in str(e.value)
    with pytest.raises(MidiReadError, match="not a directory"):
        read_midi_dir(tmp_path / "nope")


def test_the_in_repo_files() -> None:
    pieces = {p.id: p for p in read_midi_dir(Path(__file__).parent / "data" / "midi")}
    assert sorted(pieces) == ["chorale_like.mid", "song_aabb.mid", "waltz_two_tempi.mid"]
    waltz = pieces["waltz_two_tempi.mid"].events
    assert 42 not in waltz[:, 0]  # the drum channel's hi-hat is not a note
    onsets = np.cumsum(waltz[:, 1])
    # 150 bpm for the first 12 beats (0.4 s each), then 120 bpm (0.5 s each): the last bass note, beat 23, is at 10.3 s
    assert onsets[-1] == pytest.approx(12 * 0.4 + 11 * 0.5, abs=1e-3)
    assert (pieces["chorale_like.mid"].events[:4, 1] == 0).all()  # four voices struck together


def test_corrupted_bytes_give_events_or_a_midi_read_error(tmp_path: Path) -> None:
    """Random byte damage to a real file: never any other exception (one bad file must not stop a run)."""
    good = (Path(__file__).parent / "data" / "midi" / "waltz_two_tempi.mid").read_bytes()
    rng = np.random.default_rng(0)
    outcomes = {"events": 0, "error": 0}
    for i in range(300):
        b = bytearray(good)
        for _ in range(int(rng.integers(1, 6))):
            b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
        if i % 3 == 0:
            b = b[: int(rng.integers(10, len(b)))]
        (tmp_path / "f.mid").write_bytes(bytes(b))
        try:
            ev = read_midi(tmp_path / "f.mid")
        except MidiReadError:
            outcomes["error"] += 1
        else:
            assert ev.dtype == np.float32 and ev.shape[1] == 5 and np.isfinite(ev).all()
            assert ((ev[:, 0] >= 0) & (ev[:, 0] <= 127) & (ev[:, 1] >= 0) & (ev[:, 2] >= 0)).all()
            outcomes["events"] += 1
    assert outcomes["events"] > 0 and outcomes["error"] > 0
