"""The one command layer: validate -> apply -> notify, shared by MQTT and MIDI CC.

Every way of steering ripieno (an MQTT topic, a knob on the keyboard) becomes a (name, payload)
pair that goes through `Controller.apply`, so both paths refuse the same things with the same
words, and a refused command changes nothing. The engine does the work behind `Actions`; this
module never touches MIDI or the network.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from .config import ACCOMPANY_STYLES, MODES, SILENCE_S, TEMPERATURE, VARIATION, CCConfig, Config, Mode

log = logging.getLogger(__name__)

MAX_PAYLOAD = 1024  # bytes; anything longer is refused before it is even decoded
SETTINGS = ("enabled", "mode", "temperature", "silence_s", "model", "variation", "accompany")
ACTIONS = ("reset", "panic")
COMMANDS = SETTINGS + ACTIONS
STEP_RING = 4096  # step times kept for p50/p99: enough for a stable p99, bounded forever
# The beat's tempo and confidence reach {base}/state when they moved this much, at most every
# TEMPO_REPORT_S: a clock's tempo wobbles by fractions of a bpm and must not flood the broker.
TEMPO_STEP_BPM = 1.0
CONFIDENCE_STEP = 0.1
TEMPO_REPORT_S = 1.0

_TRUE = {"true", "on", "1"}
_FALSE = {"false", "off", "0"}
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", re.ASCII)  # ASCII: "١" or "１" is no digit here
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class CommandError(Exception):
    """A refused command; .reason is the one line sent back on {base}/error or logged."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class State:
    """What ripieno is doing, as published retained on {base}/state."""

    enabled: bool
    mode: str
    temperature: float
    silence_s: float
    model: str
    input: str
    output: str
    notes_in: int
    notes_out: int
    tempo_bpm: float | None = None  # the tempo source's beat (None: no beat known)
    beat_confidence: float = 0.0  # 0..1, how sure the source is of it
    variation: float = 0.25  # call answers: 0 = may echo the player's phrase, 1 = free
    accompany: str = "bass"  # accompany mode's part: bass | chords | voice

    def to_json(self) -> str:
        return json.dumps(asdict(self))


class Actions(Protocol):
    """What the engine does for the command layer. on_state/reset/panic must not block the loop."""

    def on_state(self, state: State) -> None: ...

    def reset(self) -> None: ...

    def panic(self) -> None: ...

    async def load_model(self, spec: str) -> None: ...


@dataclass
class Stats:
    """Counters the engine updates in place; read by the metrics publisher. Bounded memory."""

    notes_in: int = 0
    notes_out: int = 0
    dropped: int = 0                 # MIDI input the engine dropped (floods, smashes)
    commands_dropped: int = 0        # MQTT commands dropped unanswered (full queue, error flood)
    commands_refused: int = 0        # commands answered with an error
    step_us: deque[float] = field(default_factory=lambda: deque(maxlen=STEP_RING))
    started_at: float = field(default_factory=time.monotonic)

    def add_step(self, us: float) -> None:
        self.step_us.append(us)

    def metrics(self, now: float | None = None) -> dict[str, float | int | None]:
        """The {base}/metrics payload: counters, step p50/p99 over the recent ring, uptime."""
        now = time.monotonic() if now is None else now
        steps = sorted(self.step_us)
        return {
            "notes_in": self.notes_in,
            "notes_out": self.notes_out,
            "step_p50_us": _percentile(steps, 0.50),
            "step_p99_us": _percentile(steps, 0.99),
            "dropped": self.dropped,
            "commands_dropped": self.commands_dropped,
            "commands_refused": self.commands_refused,
            "uptime_s": round(now - self.started_at, 1),
        }


def _percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list; None when nothing was measured yet."""
    if not ordered:
        return None
    k = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return round(float(ordered[k]), 1)


# ------------------------------------------------------------------------------ payload parsing

def _text(payload: bytes) -> str:
    if len(payload) > MAX_PAYLOAD:
        raise CommandError(f"payload of {len(payload)} bytes is over the {MAX_PAYLOAD}-byte limit")
    try:
        return payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CommandError("payload is not UTF-8 text") from None


def parse_bool(text: str) -> bool:
    t = text.lower()
    if t in _TRUE:
        return True
    if t in _FALSE:
        return False
    raise CommandError(f"{text[:40]!r} is not one of true|false|on|off|1|0")


def parse_choice(text: str, choices: tuple[str, ...]) -> str:
    t = text.lower()
    if t not in choices:
        raise CommandError(f"{text[:40]!r} is not one of {'|'.join(choices)}")
    return t


def parse_mode(text: str) -> str:
    return Mode(parse_choice(text, MODES))


def parse_number(text: str, lo: float, hi: float) -> float:
    """A plain decimal number within [lo, hi]; no nan, inf, hex or Python-only spellings."""
    if not _NUMBER.fullmatch(text):
        raise CommandError(f"{text[:40]!r} is not a number")
    value = float(text)
    if not lo <= value <= hi:
        raise CommandError(f"{value:g} is out of range {lo:g}-{hi:g}")
    return value


def available_models(models_dir: str) -> dict[str, Path]:
    """Checkpoints a command may name: the NAME.safetensors (or old NAME.pt, which then says how to
    convert it) files directly in models_dir. A symlink counts only if it resolves to a file inside
    models_dir: a name never opens anything outside it."""
    if not models_dir:
        return {}
    root = Path(models_dir).expanduser()
    try:
        real_root = root.resolve(strict=True)
        entries = list(root.iterdir())
    except OSError:
        return {}
    found: dict[str, Path] = {}
    for p in sorted(entries, key=lambda p: (p.suffix != ".safetensors", p.name)):
        if p.suffix not in (".safetensors", ".pt") or not _MODEL_NAME.fullmatch(p.stem) or p.stem in found:
            continue
        try:
            real = p.resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if real.parent == real_root and real.is_file():
            found[p.stem] = real
    return found


def model_spec(models_dir: str, name: str) -> str:
    """'default', or the path of the checkpoint called name in models_dir: never an arbitrary path."""
    if name == "default":
        return "default"
    if not _MODEL_NAME.fullmatch(name):
        raise CommandError(f"{name[:40]!r} is not a model name (letters, digits, . _ -; no paths)")
    models = available_models(models_dir)
    if name not in models:
        if not models_dir:
            raise CommandError(f"no model {name!r}: [engine] models_dir is not set, only 'default' is available")
        names = ", ".join(["default", *models])
        raise CommandError(f"no model {name!r} in models_dir (available: {names})")
    return str(models[name])


def model_label(spec: str) -> str:
    """The name shown in state for a configured model: 'default' or the checkpoint's name, not its path."""
    return spec if spec == "default" else Path(spec).stem or spec


# ----------------------------------------------------------------------------------- controller

Listener = Callable[[State], None]


class Controller:
    """Holds the settings, validates commands, tells the engine and then every listener."""

    def __init__(self, cfg: Config, actions: Actions) -> None:
        self.cfg = cfg
        self.actions = actions
        self.stats = Stats()
        self._listeners: list[Listener] = []
        self._loading: str | None = None
        self._tempo: dict[str, float | None] = {"tempo_bpm": None, "beat_confidence": 0.0}
        self._tempo_at: float | None = None  # when the tempo was last published
        self._settings = {
            "enabled": True,
            "mode": cfg.engine.mode,
            "temperature": cfg.engine.temperature,
            "silence_s": cfg.engine.silence_s,
            "model": model_label(cfg.engine.model),
            "variation": cfg.engine.variation,
            "accompany": cfg.engine.accompany,
            "input": cfg.midi.input,
            "output": cfg.midi.output,
        }

    @property
    def state(self) -> State:
        """The current state; note counts are read live from stats."""
        return State(**self._settings, notes_in=self.stats.notes_in, notes_out=self.stats.notes_out, **self._tempo)

    def add_listener(self, cb: Listener) -> None:
        self._listeners.append(cb)

    def remove_listener(self, cb: Listener) -> None:
        if cb in self._listeners:
            self._listeners.remove(cb)

    def set_ports(self, input: str | None = None, output: str | None = None) -> State:
        """The engine reports which ports it is actually connected to (after hot-plug, say)."""
        changes = {k: v for k, v in (("input", input), ("output", output)) if v is not None}
        return self._commit(changes) if changes else self.state

    def report_tempo(self, bpm: float | None, confidence: float, now: float | None = None) -> bool:
        """The tempo source's reading; state listeners hear of it only when it moved by more than
        TEMPO_STEP_BPM or CONFIDENCE_STEP (or a beat appeared or vanished), at most every
        TEMPO_REPORT_S. True when it was published. The caller polls: a reading held back by the
        rate limit goes out with a later one."""
        now = time.monotonic() if now is None else now
        bpm = round(float(bpm), 1) if bpm is not None and math.isfinite(bpm) else None
        confidence = round(min(1.0, max(0.0, float(confidence))), 2) if math.isfinite(confidence) else 0.0
        old_bpm, old_conf = self._tempo["tempo_bpm"], self._tempo["beat_confidence"] or 0.0
        moved = ((bpm is None) != (old_bpm is None)
                 or (bpm is not None and old_bpm is not None and abs(bpm - old_bpm) > TEMPO_STEP_BPM)
                 or abs(confidence - old_conf) > CONFIDENCE_STEP
                 or (confidence in (0.0, 1.0) and confidence != old_conf))  # the ends are always told
        if not moved or (self._tempo_at is not None and now - self._tempo_at < TEMPO_REPORT_S):
            return False
        self._tempo = {"tempo_bpm": bpm, "beat_confidence": confidence}
        self._tempo_at = now
        self._notify(self.state)
        return True

    def validate(self, name: str, payload: bytes) -> object:
        """Parse payload for command name; raise CommandError without changing anything."""
        if name not in COMMANDS:
            raise CommandError(f"unknown command {name[:60]!r} (known: {', '.join(COMMANDS)})")
        text = _text(payload)
        if name == "enabled":
            return parse_bool(text)
        if name == "mode":
            return parse_mode(text)
        if name == "temperature":
            return parse_number(text, TEMPERATURE.lo, TEMPERATURE.hi)
        if name == "silence_s":
            return parse_number(text, SILENCE_S.lo, SILENCE_S.hi)
        if name == "model":
            return model_spec(self.cfg.engine.models_dir, text)
        if name == "variation":
            return parse_number(text, VARIATION.lo, VARIATION.hi)
        if name == "accompany":
            return parse_choice(text, ACCOMPANY_STYLES)
        return None  # reset, panic: any (short) payload presses the button

    async def apply(self, name: str, payload: bytes) -> State:
        """Validate, apply and notify; a refused command raises CommandError and changes nothing.
        Only a model load awaits anything; every other command is `apply_now`."""
        if name == "model":
            return await self._load_model(str(self.validate(name, payload)))
        return self.apply_now(name, payload)

    def apply_now(self, name: str, payload: bytes) -> State:
        """Any command but a model load, at once (a setting, reset, panic): nothing here waits."""
        value = self.validate(name, payload)
        if name == "model":
            raise CommandError("a model load takes time: it goes through apply, not apply_now")
        if name == "reset":
            self.actions.reset()
            log.info("command: reset")
            return self.state
        if name == "panic":
            self.actions.panic()
            log.info("command: panic")
            return self.state
        # knobs send a stream of values: continuous settings log at debug, discrete ones at info
        (log.debug if name in ("temperature", "silence_s", "variation") else log.info)("command: %s = %r", name, value)
        return self._commit({name: value})

    async def _load_model(self, spec: str) -> State:
        label = model_label(spec)
        if self._loading is not None:
            raise CommandError(f"model {self._loading!r} is still loading; try again when it is done")
        self._loading = label
        try:
            await self.actions.load_model(spec)
        except Exception as exc:  # the engine's error is the user's answer; the old model keeps playing
            raise CommandError(f"cannot load model {label!r}: {exc}") from None
        finally:
            self._loading = None
        log.info("command: model = %r", label)
        return self._commit({"model": label})

    def _commit(self, changes: dict[str, object]) -> State:
        self._settings = self._settings | changes
        state = self.state
        self.actions.on_state(state)
        self._notify(state)
        return state

    def _notify(self, state: State) -> None:
        for cb in list(self._listeners):
            try:
                cb(state)
            except Exception:  # a broken listener must not undo or block a command
                log.exception("state listener failed")


# ------------------------------------------------------------------------------- rate limits

COMMAND_RATE = 20.0  # commands per second, sustained, from MQTT and from MIDI CC alike ...
COMMAND_BURST = 40  # ... with this burst (MQTT refuses beyond it on {base}/error; CC keeps the latest)


class RateLimiter:
    """Token bucket: `rate` per second sustained, `burst` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self._tokens, self._at = float(burst), None

    def allow(self, now: float) -> bool:
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False



# ------------------------------------------------------------------------------------- MIDI CC

def _scale(value: int, lo: float, hi: float) -> float:
    return round(lo + (hi - lo) * value / 127, 3)


def cc_command(cc_cfg: CCConfig, controller_number: int, value: int) -> tuple[str, bytes] | None:
    """Map a control change to the same (name, payload) an MQTT client would send, or None.

    Continuous controllers scale linearly over the command's whole range; mode is split in
    three bands (off | call | accompany), enabled at the middle (>= 64 on), like a pedal.
    """
    if not (1 <= controller_number <= 127 and 0 <= value <= 127):
        return None
    if controller_number == cc_cfg.temperature:
        return "temperature", f"{_scale(value, TEMPERATURE.lo, TEMPERATURE.hi):g}".encode()
    if controller_number == cc_cfg.silence_s:
        return "silence_s", f"{_scale(value, SILENCE_S.lo, SILENCE_S.hi):g}".encode()
    if controller_number == cc_cfg.mode:
        return "mode", (b"off" if value < 43 else b"call" if value < 86 else b"accompany")
    if controller_number == cc_cfg.enabled:
        return "enabled", (b"on" if value >= 64 else b"off")
    if controller_number == cc_cfg.variation:
        return "variation", f"{_scale(value, VARIATION.lo, VARIATION.hi):g}".encode()
    return None

