"""What the listener reports and the engine consumes: key presses, releases, controller moves."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KeyDown:
    t: float
    channel: int  # 0-15
    pitch: int
    velocity: int


@dataclass(frozen=True, slots=True)
class KeyUp:
    t: float
    channel: int
    pitch: int
    held_s: float  # how long the key was down: the note's real duration


@dataclass(frozen=True, slots=True)
class Control:
    t: float
    channel: int
    number: int
    value: int


Event = KeyDown | KeyUp | Control
