"""MIDI reading against files built byte by byte with mido: every quirk the reader claims to handle,
beats of the file's metre (time signatures, pickups, changes), seconds through its tempo map, parts as roles."""

from __future__ import annotations

import logging
from pathlib import Path

import mido
import numpy as np
import pytest

from ripieno.training.midi_io import Metre, MidiReadError, read_midi, read_midi_dir, read_notes, write_midi
from ripieno.training.pieces import events_from_notes

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


def sig(num: int, den: int, t: int = 0) -> mido.MetaMessage:
    return mido.MetaMessage("time_signature", numerator=num, denominator=den, time=t)


def quarters(pitches: list[int], ticks: int = TPB, ch: int = 0) -> list[mido.Message]:
    """One note after another, each `ticks` long."""
    out: list[mido.Message] = []
    for p in pitches:
        out += [on(p, 0, ch=ch), off(p, ticks, ch=ch)]
    return out


def test_tempo_map_chords_and_drums(tmp_path: Path) -> None:
    # tempo track: 120 bpm, then 60 bpm from beat 2 (tick 960)
    tempo = [mido.MetaMessage("set_tempo", tempo=500_000, time=0), mido.MetaMessage("set_tempo", tempo=1_000_000, time=960)]
    # quarter notes at beats 0, 1, 2, 3 -> 0, 0.5, 1.0, 2.0 s; a chord at beat 0; a drum hit ignored
    melody = [on(67, 0), on(60, 0, vel=100), off(67, 480), off(60, 0), on(62, 0), off(62, 480), on(64, 0), off(64, 480), on(65, 0), off(65, 480)]
    drums = [on(36, 0, ch=9), off(36, 240, ch=9)]
    ev = read_midi(save(tmp_path / "a.mid", tempo, melody, drums))
    np.testing.assert_array_equal(ev[:, 0], [60, 67, 62, 64, 65])  # onset, then pitch
    np.testing.assert_allclose(ev[:, 1], [0.0, 0.0, 1.0, 1.0, 1.0])  # steps in beats: the tempo change does not move them
    np.testing.assert_allclose(ev[:, 2], [1.0, 1.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(ev[:, 3], [100, 64, 64, 64, 64])
    np.testing.assert_array_equal(ev[:, 4], 0)  # one part with notes: the lead
    np.testing.assert_allclose(ev[:, 5:], [[0, 4], [0, 4], [1, 4], [2, 4], [3, 4]])  # no time signature: 4/4
    assert ev.dtype == np.float32 and ev.shape == (5, 7)
    # the same notes at one steady tempo read the same beats
    steady = read_midi(save(tmp_path / "steady.mid", [mido.MetaMessage("set_tempo", tempo=700_000, time=0)], melody, drums))
    np.testing.assert_array_equal(steady, ev)
    # ... and the seconds follow the tempo map
    notes = read_notes(tmp_path / "a.mid")
    onset_s = dict(zip(notes.pitch.tolist(), notes.onset_s.tolist()))
    dur_s = dict(zip(notes.pitch.tolist(), notes.duration_s.tolist()))
    assert onset_s == pytest.approx({60: 0.0, 67: 0.0, 62: 0.5, 64: 1.0, 65: 2.0})
    assert dur_s == pytest.approx({60: 0.5, 67: 0.5, 62: 0.5, 64: 1.0, 65: 1.0})
    assert notes.qpm == pytest.approx(120.0) and 36 not in notes.pitch
    np.testing.assert_array_equal(np.sort(notes.tick), [0, 0, 480, 960, 1440])


def test_seconds_through_a_tempo_change_that_falls_inside_a_note(tmp_path: Path) -> None:
    # 100 bpm (0.6 s a beat) for one and a half beats, then 150 bpm (0.4 s): a 2-beat note from beat 1
    tempo = [mido.MetaMessage("set_tempo", tempo=600_000, time=0), mido.MetaMessage("set_tempo", tempo=400_000, time=720)]
    notes = read_notes(save(tmp_path / "t.mid", tempo, [on(60, 480), off(60, 960)]))
    assert notes.onset_s.tolist() == pytest.approx([0.6])
    assert notes.duration_s.tolist() == pytest.approx([0.5 * 0.6 + 1.5 * 0.4])
    ev = read_midi(tmp_path / "t.mid")
    np.testing.assert_allclose(ev[:, 1:3], [[0.0, 2.0]])  # the first event's step is 0; it lasts 2 beats
    np.testing.assert_allclose(ev[:, 5], [1.0])  # on beat 2 of its bar


def test_velocity_zero_overlaps_and_missing_note_off(tmp_path: Path) -> None:
    msgs = [
        on(60, 0), on(60, 480, vel=0),  # velocity-0 note-on is a note-off: 1 beat
        on(62, 0), on(62, 240),  # the same key struck again: the first ends after half a beat
        off(62, 240),  # ... the second half a beat later
        off(62, 0),  # a stray note-off with nothing sounding: ignored
        on(64, 0),  # never released: lasts to the end of the file (end of track at beat 4)
        mido.MetaMessage("end_of_track", time=960),
    ]
    ev = read_midi(save(tmp_path / "b.mid", msgs))
    np.testing.assert_array_equal(ev[:, 0], [60, 62, 62, 64])
    np.testing.assert_allclose(ev[:, 1], [0.0, 1.0, 0.5, 0.5])
    np.testing.assert_allclose(ev[:, 2], [1.0, 0.5, 0.5, 2.0])
    notes = read_notes(tmp_path / "b.mid")  # the default 120 bpm: half a second a beat
    np.testing.assert_allclose(np.sort(notes.onset_s), [0.0, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(np.sort(notes.duration_s), [0.25, 0.25, 0.5, 1.0])


def test_running_status(tmp_path: Path) -> None:
    # MThd, then one MTrk whose second and third events omit the status byte 0x90
    track = bytes([0x00, 0x90, 60, 80, 0x83, 0x60, 60, 0, 0x00, 64, 70, 0x83, 0x60, 0x80, 64, 0, 0x00, 0xFF, 0x2F, 0x00])
    data = b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big") + TPB.to_bytes(2, "big")
    data += b"MTrk" + len(track).to_bytes(4, "big") + track
    (tmp_path / "rs.mid").write_bytes(data)
    ev = read_midi(tmp_path / "rs.mid")
    np.testing.assert_array_equal(ev[:, 0], [60, 64])
    np.testing.assert_allclose(ev[:, 1:3], [[0.0, 1.0], [1.0, 1.0]])  # 480 ticks = one beat
    np.testing.assert_array_equal(ev[:, 3], [80, 70])


# ----------------------------------------------------------------------------------- metre


def test_three_four(tmp_path: Path) -> None:
    ev = read_midi(save(tmp_path / "w.mid", [sig(3, 4), *quarters([60, 62, 64, 65, 67])]))
    np.testing.assert_allclose(ev[:, 1], [0, 1, 1, 1, 1])
    np.testing.assert_allclose(ev[:, 5], [0, 1, 2, 0, 1])  # beat positions in the bar
    np.testing.assert_allclose(ev[:, 6], 3)


def test_six_eight_has_dotted_quarter_beats_and_bars_of_two(tmp_path: Path) -> None:
    # eighth notes (240 ticks) in 6/8: three to a beat, two beats to the bar
    ev = read_midi(save(tmp_path / "jig.mid", [sig(6, 8), *quarters(list(range(60, 68)), ticks=240)]))
    np.testing.assert_allclose(ev[:, 1], [0] + [1 / 3] * 7, atol=1e-6)
    np.testing.assert_allclose(ev[:, 2], 1 / 3, atol=1e-6)
    np.testing.assert_allclose(ev[:, 5], [0, 1 / 3, 2 / 3, 1, 4 / 3, 5 / 3, 0, 1 / 3], atol=1e-6)
    np.testing.assert_allclose(ev[:, 6], 2)


def test_a_change_from_four_four_to_three_four_mid_file(tmp_path: Path) -> None:
    # one bar of 4/4 in quarters, then 3/4 from tick 1920: the bar lines follow the new metre
    ev = read_midi(save(tmp_path / "c.mid", [sig(4, 4), sig(3, 4, t=0), *quarters([60, 62, 64, 65, 67, 69, 71, 72])]))
    # (the second signature at tick 0 replaced the first: a plain 3/4 file)
    np.testing.assert_allclose(ev[:, 6], 3)
    msgs = [sig(4, 4), *quarters([60, 62, 64]), on(65, 0), off(65, 480), sig(3, 4, t=0), *quarters([67, 69, 71, 72])]
    ev = read_midi(save(tmp_path / "c2.mid", msgs))
    np.testing.assert_allclose(ev[:, 1], [0] + [1] * 7)  # beats stay continuous across the change
    np.testing.assert_allclose(ev[:, 5], [0, 1, 2, 3, 0, 1, 2, 0])
    np.testing.assert_allclose(ev[:, 6], [4, 4, 4, 4, 3, 3, 3, 3])
    # a 4/4 -> 6/8 change also changes the beat: eighths are a third of a beat from there on
    msgs = [sig(4, 4), *quarters([60, 62, 64, 65]), sig(6, 8, t=0), *quarters([67, 69, 71], ticks=240)]
    ev = read_midi(save(tmp_path / "c3.mid", msgs))
    np.testing.assert_allclose(ev[:, 1], [0, 1, 1, 1, 1, 1 / 3, 1 / 3], atol=1e-6)
    np.testing.assert_allclose(ev[:, 6], [4, 4, 4, 4, 2, 2, 2])


def test_a_pickup(tmp_path: Path) -> None:
    # the upbeat written as a rest before it: the tune starts on beat 3 of a 3/4 bar
    ev = read_midi(save(tmp_path / "p.mid", [sig(3, 4), on(67, 960), off(67, 480), *quarters([72, 74, 76])]))
    np.testing.assert_allclose(ev[:, 1], [0, 1, 1, 1])  # the first event's step is 0 whatever its place
    np.testing.assert_allclose(ev[:, 5], [2, 0, 1, 2])
    # the upbeat written as a short bar of its own (1/4, then 3/4)
    ev = read_midi(save(tmp_path / "p2.mid", [sig(1, 4), on(67, 0), off(67, 480), sig(3, 4, t=0), *quarters([72, 74, 76, 77])]))
    np.testing.assert_allclose(ev[:, 5], [0, 0, 1, 2, 0])
    np.testing.assert_allclose(ev[:, 6], [1, 3, 3, 3, 3])


def test_no_time_signature_is_four_four_and_the_log_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = save(tmp_path / "plain.mid", quarters([60, 62, 64, 65, 67]))
    with caplog.at_level(logging.INFO, logger="ripieno.training.midi_io"):
        ev = read_midi(path)
    np.testing.assert_allclose(ev[:, 5], [0, 1, 2, 3, 0])
    np.testing.assert_allclose(ev[:, 6], 4)
    lines = [r.getMessage() for r in caplog.records if "time signature" in r.getMessage()]
    assert len(lines) == 1 and "plain.mid" in lines[0] and "4/4" in lines[0]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ripieno.training.midi_io"):
        read_midi(save(tmp_path / "signed.mid", [sig(4, 4), *quarters([60, 62])]))
    assert not [r for r in caplog.records if "time signature" in r.getMessage()]


def test_metre_beats_by_hand() -> None:
    # a bar of 4/4 (4 beats), a bar of 6/8 (2 dotted-quarter beats), then 3/4
    m = Metre(((0, 4, 4), (1920, 6, 8), (3360, 3, 4)), 480)
    onset, pos, bar = m.beats(np.array([0, 480, 1920, 2160, 2640, 3360, 3840]))
    np.testing.assert_allclose(onset, [0, 1, 4, 4 + 1 / 3, 5, 6, 7])
    np.testing.assert_allclose(pos, [0, 1, 0, 1 / 3, 1, 0, 1])
    np.testing.assert_allclose(bar, [4, 4, 2, 2, 2, 3, 3])


# -------------------------------------------------------------------------------- writing


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    # a lead over an accompaniment, in 4/4: a chord, a re-struck key, a zero-length note
    onset = np.array([0, 0, 0, 1, 1.5, 1.5, 2, 2 + 1 / 3, 2 + 2 / 3])
    pitch = [72, 48, 55, 74, 76, 52, 76, 77, 79]
    dur = [1, 2, 2, 0.5, 0.5, 2, 1 / 3, 1 / 3, 0]
    role = [0, 1, 1, 0, 0, 1, 0, 0, 0]
    ev, _ = events_from_notes(onset, pitch, dur, [90, 60, 61, 80, 81, 62, 70, 71, 72], role, np.mod(onset, 4), 4.0)
    write_midi(tmp_path / "c.mid", ev)
    back = read_midi(tmp_path / "c.mid")
    np.testing.assert_allclose(back, ev, atol=1e-6)
    mid = mido.MidiFile(tmp_path / "c.mid")
    assert len(mid.tracks) == 2  # the lead on track 1, the accompaniment on track 2 and the next channel
    ons = [[(m.note, m.channel) for m in t if m.type == "note_on"] for t in mid.tracks]
    assert sorted(ons[0]) == sorted((p, 0) for p, r in zip(pitch, role) if r == 0)
    assert sorted(ons[1]) == sorted((p, 1) for p, r in zip(pitch, role) if r == 1)
    # a lead alone is one track
    write_midi(tmp_path / "solo.mid", ev[ev[:, 4] == 0])
    assert len(mido.MidiFile(tmp_path / "solo.mid").tracks) == 1


def test_six_eight_with_a_pickup_round_trips_with_dotted_quarter_beats(tmp_path: Path) -> None:
    # an eighth-note upbeat (the last third of bar 0's second beat), then eighths and a dotted quarter
    onset = np.array([0, 1 / 3, 2 / 3, 1, 2, 2, 7 / 3]) + 5 / 3
    pitch = [62, 67, 71, 74, 72, 43, 71]
    dur = [1 / 3, 1 / 3, 1 / 3, 1, 1 / 3, 2, 2 / 3]
    role = [0, 0, 0, 0, 0, 1, 0]
    ev, _ = events_from_notes(onset, pitch, dur, None, role, np.mod(onset, 2), 2.0)
    assert ev[0, 5] == pytest.approx(5 / 3)
    write_midi(tmp_path / "jig.mid", ev, bpm=90, beat_quarters=1.5)
    sigs = [m for m in mido.MidiFile(tmp_path / "jig.mid").tracks[0] if m.type == "time_signature"]
    assert [(m.numerator, m.denominator) for m in sigs] == [(6, 8)]
    back = read_midi(tmp_path / "jig.mid")
    np.testing.assert_allclose(back, ev, atol=1e-5)
    notes = read_notes(tmp_path / "jig.mid")
    assert notes.qpm == pytest.approx(90.0)
    # a dotted quarter (one beat) at 90 quarters a minute lasts a second
    assert float(notes.duration_s[notes.pitch == 74][0]) == pytest.approx(1.0, abs=1e-3)


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


@pytest.mark.parametrize(
    "meta, why",
    [
        (bytes([0xFF, 0x58, 0x04, 0, 2, 24, 8]), "time signature"),  # 0/4
        (bytes([0xFF, 0x58, 0x04, 3, 147, 24, 8]), "time signature"),  # 3/2**147
        (bytes([0xFF, 0x51, 0x03, 0, 0, 0]), "tempo"),  # 0 microseconds a beat
    ],
)
def test_damaged_metre_or_tempo_is_a_midi_read_error(tmp_path: Path, meta: bytes, why: str) -> None:
    """Never infinite or NaN beats or seconds, never a ZeroDivisionError: one line naming the file."""
    track = b"\x00" + meta + bytes([0x00, 0x90, 60, 80, 0x83, 0x60, 0x80, 60, 0, 0x00, 0xFF, 0x2F, 0x00])
    data = b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big") + TPB.to_bytes(2, "big")
    (tmp_path / "d.mid").write_bytes(data + b"MTrk" + len(track).to_bytes(4, "big") + track)
    with pytest.raises(MidiReadError, match=why) as e:
        read_midi(tmp_path / "d.mid")
    assert "d.mid" in str(e.value) and "\n" not in str(e.value)


def test_the_in_repo_files(caplog: pytest.LogCaptureFixture) -> None:
    folder = Path(__file__).parent / "data" / "midi"
    with caplog.at_level(logging.INFO, logger="ripieno.training.midi_io"):
        pieces = {p.id: p for p in read_midi_dir(folder)}
    assert sorted(pieces) == ["chorale_like.mid", "song_aabb.mid", "waltz_two_tempi.mid"]
    waltz = pieces["waltz_two_tempi.mid"].events
    assert 42 not in waltz[:, 0]  # the drum channel's hi-hat is not a note
    onsets = np.cumsum(waltz[:, 1])
    # the last bass note is on beat 23 (beat 3 of bar 8 in 3/4), whatever the tempo change at beat 12
    assert onsets[-1] == pytest.approx(23.0, abs=1e-6)
    np.testing.assert_allclose(waltz[:, 6], 3)
    assert waltz[-1, 5] == pytest.approx(2.0)
    assert set(waltz[:, 4].tolist()) == {0, 1} and (waltz[waltz[:, 4] == 1, 0] < 72).all()  # the bass is the accompaniment
    # 150 bpm for the first 12 beats (0.4 s each), then 120 bpm (0.5 s each): beat 23 is at 10.3 s
    notes = read_notes(folder / "waltz_two_tempi.mid")
    assert float(notes.onset_s.max()) == pytest.approx(12 * 0.4 + 11 * 0.5, abs=1e-3)
    chorale = pieces["chorale_like.mid"].events
    assert (chorale[:4, 1] == 0).all()  # four voices struck together
    assert chorale[:4, 4].tolist() == [0, 1, 1, 1] and chorale[0, 0] == 71  # the soprano (first channel) leads, first
    # the song has no time signature: 4/4, said once
    said = [r.getMessage() for r in caplog.records if "no time signature" in r.getMessage()]
    assert len(said) == 2 and any("song_aabb.mid" in m for m in said) and any("chorale_like.mid" in m for m in said)
    np.testing.assert_allclose(pieces["song_aabb.mid"].events[:, 6], 4)


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
            assert ev.dtype == np.float32 and ev.shape[1] == 7 and np.isfinite(ev).all()
            assert ((ev[:, 0] >= 0) & (ev[:, 0] <= 127) & (ev[:, 1] >= 0) & (ev[:, 2] >= 0)).all()
            outcomes["events"] += 1
    assert outcomes["events"] > 0 and outcomes["error"] > 0
