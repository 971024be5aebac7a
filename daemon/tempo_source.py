"""`[tempo] source` -> the `Tempo` the engine places its notes on (ripieno.model.play.tempo).

    player      ripieno.model.play.beat.BeatTracker: the player's own onsets (the engine feeds it)
    midi_clock  ripieno.daemon.clock.MidiClock: a DAW's clock on ripieno's input (the service feeds it)
    link        ripieno.daemon.link.LinkTempo: an Ableton Link session (needs the `link` extra)

`check(cfg)` refuses, at start and in one line, a source that cannot be had here; `make_tempo`
builds it (on the running loop: Link needs it).
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from .config import Config, ConfigError

log = logging.getLogger(__name__)

BEAT_MODULE = "ripieno.model.play.beat"


def check(cfg: Config) -> None:
    """ConfigError (exit 2, one line) when the configured source needs a package that is missing."""
    if cfg.tempo.source == "link":
        try:
            importlib.import_module("aalink")
        except ImportError:
            raise ConfigError(f"{cfg.source}: [tempo] source = \"link\" needs aalink: pip install 'ripieno[link]'") from None


def make_tempo(cfg: Config) -> Any:
    """The configured tempo source (a `Tempo`); imports each source only when it is the one chosen."""
    t = cfg.tempo
    if t.source == "midi_clock":
        from .clock import MidiClock

        return MidiClock(t.beats_per_bar)
    if t.source == "link":
        check(cfg)
        from .link import LinkTempo

        return LinkTempo(t.beats_per_bar)
    try:
        beat = importlib.import_module(BEAT_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != BEAT_MODULE:
            raise
        # Only while the player's tracker is not in this checkout yet: the engine then tracks the
        # player's pulse itself (Engine(tempo=None)).
        log.warning("%s is missing: the engine follows the player's pulse on its own", BEAT_MODULE)
        return None
    return beat.BeatTracker()
