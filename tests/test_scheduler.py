"""The scheduler sends on time, keeps limits, and whatever happens can close every note it opened."""

from __future__ import annotations

import random

from ripieno.model.play.scheduler import Scheduler


def sounding_after(msgs: list[list[int]]) -> set[int]:
    on: set[int] = set()
    for m in msgs:
        if m[0] & 0xF0 == 0x90 and m[2] > 0:
            on.add(m[1])
        elif m[0] & 0xF0 == 0x80 or (m[0] & 0xF0 == 0xB0 and m[1] in (120, 123)):
            on.discard(m[1]) if m[0] & 0xF0 == 0x80 else on.clear()
    return on


def test_messages_leave_in_time_order_with_offs_before_ons():
    s = Scheduler(channel=2)
    s.add(1.0, 1.5, 60, 100)
    s.add(1.5, 2.0, 62, 90)
    assert s.due(0.9) == [] and s.next_time() == 1.0
    assert s.due(1.0) == [(1.0, [0x92, 60, 100])]
    assert s.next_time() == 1.5
    assert s.due(1.6) == [(1.5, [0x82, 60, 0]), (1.5, [0x92, 62, 90])]
    assert s.open == {62}


def test_same_pitch_cuts_the_earlier_note_short():
    s = Scheduler(0)
    s.add(0.0, 2.0, 60, 100)
    s.add(1.0, 3.0, 60, 100)
    out = [m for _, m in s.due(1.0)]
    assert out == [[0x90, 60, 100], [0x80, 60, 0], [0x90, 60, 100]]


def test_polyphony_limit_steals_the_oldest_voice():
    s = Scheduler(0, max_polyphony=2)
    for i, p in enumerate((60, 64, 67)):
        s.add(0.1 * i, 5.0, p, 90)
    msgs = [m for _, m in s.due(0.2)]
    assert [0x80, 60, 0] in msgs and s.open == {64, 67}


def test_panic_closes_everything_then_resets_the_channel():
    s = Scheduler(channel=4)
    s.add(0.0, 9.0, 60, 100)
    s.add(0.0, 9.0, 64, 100)
    s.add(5.0, 9.0, 67, 100)  # planned, never started: must never start
    s.due(1.0)
    msgs = s.panic()
    assert msgs[:2] == [[0x84, 60, 0], [0x84, 64, 0]]
    assert msgs[2:] == [[0xB4, 64, 0], [0xB4, 123, 0], [0xB4, 120, 0]]
    assert s.open == set() and s.next_time() is None and s.due(10.0) == []


def test_no_stuck_note_under_random_plans_cuts_and_flushes():
    rng = random.Random(3)
    s = Scheduler(0, max_polyphony=4)
    sent: list[list[int]] = []
    t = 0.0
    for _ in range(3000):
        t += rng.random() * 0.05
        r = rng.random()
        if r < 0.6:
            on = t + rng.random() * 0.2
            s.add(on, on + rng.random(), rng.randrange(40, 80), 90)
        elif r < 0.62:
            sent += s.cut()
        sent += [m for _, m in s.due(t)]
        assert sounding_after(sent) == s.open
        assert len(s.open) <= 4
    sent += [m for _, m in s.due(float("inf"))]
    assert sounding_after(sent) == set() == s.open
