"""The daemon's configuration: one frozen dataclass tree, loaded from TOML and validated once.

config.toml is a contract other tools write, so every refusal names the file, the key and what
is allowed, in one line. Nothing downstream re-checks these values.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import stat
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

Api = Literal["auto", "alsa", "jack"]
class Mode(enum.StrEnum):
    """What ripieno does with the player's notes (a str: compares and serialises as its value)."""

    CALL = "call"
    ACCOMPANY = "accompany"
    OFF = "off"


MODES = tuple(m.value for m in Mode)
Accompany = Literal["bass", "chords", "voice"]
TempoSource = Literal["player", "midi_clock", "link"]
ACCOMPANY_STYLES: tuple[str, ...] = get_args(Accompany)  # accompany mode's parts: config, MQTT set/accompany, HA select


class ConfigError(Exception):
    """A config value that cannot be used; str() is the one line shown to the user."""


@dataclass(frozen=True)
class Range:
    """Inclusive numeric bounds for a field, attached through field metadata; `step` is what a
    slider moves by (Home Assistant's number entity)."""

    lo: float
    hi: float
    step: float = 0.0


# The one definition of each live setting's range: the config check, the MQTT set/ command, the
# MIDI CC scaling and the Home Assistant number all read these (tests/test_commands.py checks
# that they agree). Temperature 0 is greedy (always the likeliest note), from anywhere.
TEMPERATURE = Range(0.0, 2.0, 0.05)
SILENCE_S = Range(0.1, 10.0, 0.1)
VARIATION = Range(0.0, 1.0, 0.05)


def _field(default: Any, doc: str, lo: float | Range | None = None, hi: float | None = None) -> Any:
    """A config field with its doc line and, optionally, its range (a Range, or lo and hi)."""
    meta: dict[str, Any] = {"doc": doc}
    if isinstance(lo, Range):
        meta["range"] = lo
    elif lo is not None and hi is not None:
        meta["range"] = Range(lo, hi)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class CCConfig:
    """MIDI controller numbers (on any channel) mapped to the same commands MQTT uses; 0 disables one.

    Defaults: mod wheel (CC1) steers temperature, CC20 and CC21 (unassigned in General MIDI)
    pick the mode and enable/disable. The sustain pedal (CC64) always belongs to the music.
    """

    temperature: int = _field(1, "controller that sets temperature (0-127 -> 0-2.0)", 0, 119)
    silence_s: int = _field(0, "controller that sets silence_s (0-127 -> 0.1-10 s)", 0, 119)
    mode: int = _field(20, "controller that picks the mode (0-42 off, 43-85 call, 86-127 accompany)", 0, 119)
    enabled: int = _field(21, "controller that enables (>= 64) or disables (< 64) ripieno", 0, 119)
    variation: int = _field(0, "controller that sets variation (0-127 -> 0-1)", 0, 119)


@dataclass(frozen=True)
class MidiConfig:
    api: Api = _field("auto", "auto | alsa | jack")
    input: str = _field("virtual", "'virtual' opens ripieno:in; otherwise a substring of a port name")
    output: str = _field("virtual", "'virtual' opens ripieno:out; otherwise a substring of a port name")
    channel: int = _field(1, "1-16, where ripieno plays", 1, 16)
    cc: CCConfig = field(default_factory=CCConfig)


@dataclass(frozen=True)
class EngineConfig:
    mode: Mode = _field(Mode.CALL, "call | accompany | off")
    temperature: float = _field(0.9, "sampling temperature, 0 = greedy", TEMPERATURE)
    silence_s: float = _field(0.8, "call mode: seconds of rest before ripieno answers", SILENCE_S)
    answer_s: float = _field(8.0, "longest answer in seconds", 0.5, 60.0)
    model: str = _field("default", "'default' (the bundled model) or a checkpoint path")
    seed: int = _field(0, "0 = a fresh seed each run", 0, 2**63 - 1)
    models_dir: str = _field("", "folder of checkpoints that MQTT set/model may name")
    max_notes_per_s: float = _field(24.0, "most notes ripieno starts in one second", 1.0, 200.0)
    max_polyphony: int = _field(6, "most notes ripieno holds at once", 1, 64)
    low_pitch: int = _field(21, "lowest pitch ripieno plays", 0, 127)
    high_pitch: int = _field(108, "highest pitch ripieno plays", 0, 127)
    accompany: Accompany = _field("bass", "accompany mode's part: bass | chords | voice")
    variation: float = _field(0.25, "call mode: 0 = an answer may echo the player's material, 1 = free", VARIATION)


@dataclass(frozen=True)
class MqttConfig:
    enabled: bool = _field(False, "connect to an MQTT broker")
    host: str = _field("127.0.0.1", "broker host")
    port: int = _field(1883, "broker port", 1, 65535)
    base_topic: str = _field("ripieno", "prefix of every topic")
    username: str = _field("", "empty = anonymous")
    password_file: str = _field("", "file holding the password (or env RIPIENO_MQTT_PASSWORD)")
    tls: bool = _field(False, "connect with TLS")
    ca_file: str = _field("", "CA certificate for TLS; empty = system store")
    cert_file: str = _field("", "client certificate for TLS (optional)")
    key_file: str = _field("", "client key for TLS (optional)")
    discovery: bool = _field(False, "publish Home Assistant discovery configs")
    discovery_prefix: str = _field("homeassistant", "Home Assistant discovery prefix")


@dataclass(frozen=True)
class TempoConfig:
    """Where the beat comes from: the player's own onsets, a DAW's MIDI clock, or Ableton Link."""

    source: TempoSource = _field("player", "player | midi_clock | link")
    beats_per_bar: int = _field(4, "beats in a bar of the clock's or Link's timeline (midi_clock, link)", 1, 12)


@dataclass(frozen=True)
class Config:
    midi: MidiConfig = field(default_factory=MidiConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    tempo: TempoConfig = field(default_factory=TempoConfig)
    source: str = "<defaults>"


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return " | ".join(repr(m.value) for m in tp)
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _check_value(where: str, key: str, tp: Any, meta: Any, value: Any) -> Any:
    """Return value coerced to tp (int -> float only), or raise ConfigError naming where/key."""
    bad = f"{where}: {key} = {value!r}: "
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise ConfigError(bad + "must be " + _type_name(tp)) from None
    if get_origin(tp) is Literal:
        if value not in get_args(tp):
            raise ConfigError(bad + "must be " + _type_name(tp))
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(bad + "must be true or false")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(bad + "must be a number")
        value = float(value)
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(bad + "must be an integer")
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(bad + "must be a string")
    rng = meta.get("range")
    if rng is not None and not (rng.lo <= value <= rng.hi):
        lo = int(rng.lo) if tp is int else rng.lo
        hi = int(rng.hi) if tp is int else rng.hi
        raise ConfigError(bad + f"must be between {lo} and {hi}")
    return value


def _build(cls: type, table: Any, where: str, prefix: str) -> Any:
    """Build dataclass cls from a TOML table, refusing unknown keys and wrong values."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [{prefix}] must be a table")
    hints = typing.get_type_hints(cls)
    # Config.source is where the file came from, not a key ([tempo] source is one).
    fields = {f.name: f for f in dataclasses.fields(cls) if not (cls is Config and f.name == "source")}
    for key in table:
        if key not in fields:
            allowed = ", ".join(fields)
            raise ConfigError(f"{where}: unknown key {prefix + '.' if prefix else ''}{key} (allowed: {allowed})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in table:
            continue
        tp = hints[name]
        dotted = f"{prefix}.{name}" if prefix else name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, table[name], where, dotted)
        else:
            kwargs[name] = _check_value(where, dotted, tp, f.metadata, table[name])
    return cls(**kwargs)


MAX_TOPIC_CHARS = 200  # our topics add ~60 characters; MQTT allows 65,535 bytes, brokers and HA far fewer


def _topic_problem(topic: str) -> str | None:
    """Why `topic` cannot prefix ripieno's topics, or None: non-empty, no wildcard, no empty level
    at either end, no control characters, short."""
    if not topic:
        return "must not be empty"
    if "#" in topic or "+" in topic:
        return "must not contain the wildcards # or +"
    if topic.startswith("/") or topic.endswith("/"):
        return "must not start or end with /"
    if any(ord(c) < 32 or c == "\x7f" for c in topic):
        return "must not contain control characters"
    if len(topic) > MAX_TOPIC_CHARS:
        return f"{len(topic):,} characters; at most {MAX_TOPIC_CHARS}"
    return None


def _cross_checks(cfg: Config) -> None:
    e = cfg.engine
    if e.low_pitch > e.high_pitch:
        raise ConfigError(f"{cfg.source}: engine.low_pitch ({e.low_pitch}) must not exceed engine.high_pitch ({e.high_pitch})")
    for name in ("input", "output"):
        if not getattr(cfg.midi, name).strip():
            raise ConfigError(f"{cfg.source}: midi.{name} must not be empty (use \"virtual\" or part of a port name)")
    for key in ("base_topic", "discovery_prefix"):
        topic = getattr(cfg.mqtt, key)
        problem = _topic_problem(topic)
        if problem:
            raise ConfigError(f"{cfg.source}: mqtt.{key} = {topic[:60]!r}{'...' if len(topic) > 60 else ''}: {problem}")
    if e.models_dir and not Path(e.models_dir).expanduser().is_dir():
        raise ConfigError(f"{cfg.source}: engine.models_dir = {e.models_dir!r}: no such folder")
    host = cfg.mqtt.host
    if cfg.mqtt.enabled and (not host.strip() or len(host) > 253 or any(c.isspace() or ord(c) < 32 for c in host)):
        raise ConfigError(f"{cfg.source}: mqtt.host = {host[:60]!r}: must be a host name or address")
    cc = cfg.midi.cc
    used = [v for v in dataclasses.astuple(cc) if v]
    if 64 in used:
        raise ConfigError(f"{cfg.source}: midi.cc: controller 64 (sustain) belongs to the music and cannot be mapped")
    if len(used) != len(set(used)):
        raise ConfigError(f"{cfg.source}: midi.cc: each controller number may be mapped to one command only")


def parse(data: dict[str, Any], source: str = "<string>") -> Config:
    """Validate a parsed TOML document into a Config."""
    cfg = _build(Config, data, source, "")
    cfg = dataclasses.replace(cfg, source=source)
    _cross_checks(cfg)
    return cfg


MAX_FILE_BYTES = 1 << 20  # a config, a password file: real ones are a few KB


def read_small_text(path: str | Path, what: str) -> str:
    """A small regular file's text, read with a size bound: never /dev/zero until memory runs out,
    never a FIFO that blocks forever, never a directory. ConfigError (one line, naming `what`)."""
    p = Path(path).expanduser()
    try:
        st = p.stat()
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{what}: not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise ConfigError(f"{what}: {st.st_size:,} bytes, more than a config or password file can be ({MAX_FILE_BYTES:,})")
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO swapped in after the stat cannot block the open
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # swapped for something else after the stat
                raise ConfigError(f"{what}: not a regular file")
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{what}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{what}: more than {MAX_FILE_BYTES:,} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what}: not UTF-8 text") from None


def load(path: str | Path) -> Config:
    """Read and validate a config file; every failure is a ConfigError with one line."""
    p = Path(path)
    try:
        text = read_small_text(p, f"{p}")
    except ConfigError as exc:
        if str(exc).endswith("no such file"):
            raise ConfigError(f"{p}: no such config file") from None
        raise
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per nesting level
        raise ConfigError(f"{p}: not a usable config: nested too deeply") from None
    return parse(data, str(p))


def override(cfg: Config, section: str, **values: Any) -> Config:
    """Apply command-line overrides (None = not given) through the same validation as the file."""
    given = {k: v for k, v in values.items() if v is not None}
    if not given:
        return cfg
    sub = getattr(cfg, section)
    hints = typing.get_type_hints(type(sub))
    fields = {f.name: f for f in dataclasses.fields(sub)}
    checked = {k: _check_value("command line", f"{section}.{k}", hints[k], fields[k].metadata, v) for k, v in given.items()}
    new = dataclasses.replace(cfg, **{section: dataclasses.replace(sub, **checked)})
    _cross_checks(new)
    return new


def as_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain data (for logs and state), without its source."""
    d = dataclasses.asdict(cfg)
    d.pop("source", None)
    return d

