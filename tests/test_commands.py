"""The command layer on its own: every command, every refusal, CC mapping. Pure logic, no peers."""

from __future__ import annotations

import dataclasses
import json

import pytest

from mqtt_helpers import RecordingActions
from ripieno.daemon import config as cfgmod
from ripieno.daemon import discovery
from ripieno.daemon.commands import (
    MAX_PAYLOAD,
    SETTINGS,
    CommandError,
    Controller,
    State,
    Stats,
    parse_number,
    available_models,
    cc_command,
)


def make(models_dir: str = "", **engine) -> tuple[Controller, RecordingActions]:
    cfg = cfgmod.parse({"engine": {"models_dir": models_dir, **engine}})
    actions = RecordingActions()
    return Controller(cfg, actions), actions


def test_initial_state_comes_from_config():
    c, _ = make(mode="accompany", temperature=1.25, silence_s=2.0)
    s = c.state
    assert (s.enabled, s.mode, s.temperature, s.silence_s, s.model) == (True, "accompany", 1.25, 2.0, "default")
    assert (s.input, s.output, s.notes_in, s.notes_out) == ("virtual", "virtual", 0, 0)
    assert (s.variation, s.accompany) == (0.25, "bass")
    c, _ = make(variation=0.8, accompany="chords")
    assert (c.state.variation, c.state.accompany) == (0.8, "chords")


def test_state_json_has_exactly_the_contract_keys():
    c, _ = make()
    c.stats.notes_in, c.stats.notes_out = 5, 3
    data = json.loads(c.state.to_json())
    assert set(data) == {"enabled", "mode", "temperature", "silence_s", "model", "input", "output", "notes_in", "notes_out",
                         "tempo_bpm", "beat_confidence", "variation", "accompany"}
    assert data["notes_in"] == 5 and data["notes_out"] == 3
    assert data["tempo_bpm"] is None and data["beat_confidence"] == 0.0  # no beat known yet: null, not a number


def test_tempo_reaches_state_only_when_it_moved_and_at_most_once_a_second():
    c, actions = make()
    seen: list[State] = []
    c.add_listener(seen.append)
    assert c.report_tempo(None, 0.0, now=0.0) is False  # nothing new
    assert c.report_tempo(120.04, 1.0, now=0.5) is True  # a beat appeared
    assert (seen[-1].tempo_bpm, seen[-1].beat_confidence) == (120.0, 1.0)
    assert json.loads(c.state.to_json())["tempo_bpm"] == 120.0
    assert c.report_tempo(120.9, 1.0, now=5.0) is False  # within a bpm: a clock's wobble
    assert c.report_tempo(121.3, 0.95, now=5.1) is True  # more than a bpm from what was published
    assert c.report_tempo(130.0, 0.95, now=5.6) is False  # rate limit: not within a second of the last
    assert c.state.tempo_bpm == 121.3  # what was published, not the held-back reading
    assert c.report_tempo(130.0, 0.95, now=6.2) is True  # the next poll after the limit sends it
    assert c.report_tempo(130.0, 0.88, now=7.5) is False  # confidence: within 0.1
    assert c.report_tempo(130.0, 0.80, now=7.6) is True  # more than 0.1
    assert c.report_tempo(130.0, 0.0, now=9.0) is True  # the beat is lost
    assert c.report_tempo(None, 0.0, now=10.1) is True  # and its tempo with it
    assert c.report_tempo(float("nan"), float("nan"), now=20.0) is False  # garbage is "no beat"
    assert [(s.tempo_bpm, s.beat_confidence) for s in seen] == [
        (120.0, 1.0), (121.3, 0.95), (130.0, 0.95), (130.0, 0.8), (130.0, 0.0), (None, 0.0)]
    assert actions.states == []  # the engine is not told: its tempo source is where these come from


async def test_commands_keep_the_last_reported_tempo_in_state():
    c, _ = make()
    c.report_tempo(98.76, 0.5, now=1.0)
    state = await c.apply("mode", b"accompany")
    assert (state.mode, state.tempo_bpm, state.beat_confidence) == ("accompany", 98.8, 0.5)


@pytest.mark.parametrize("name, payload, field, expected", [
    ("enabled", b"false", "enabled", False),
    ("enabled", b"OFF", "enabled", False),
    ("enabled", b"0", "enabled", False),
    ("mode", b"accompany", "mode", "accompany"),
    ("mode", b" Off\n", "mode", "off"),
    ("temperature", b"1.5", "temperature", 1.5),
    ("temperature", b"0.05", "temperature", 0.05),
    ("temperature", b"2", "temperature", 2.0),
    ("silence_s", b"10", "silence_s", 10.0),
    ("silence_s", b".1", "silence_s", 0.1),
    ("variation", b"0", "variation", 0.0),
    ("variation", b"1", "variation", 1.0),
    ("variation", b"0.75", "variation", 0.75),
    ("accompany", b"chords", "accompany", "chords"),
    ("accompany", b" Voice\n", "accompany", "voice"),
    ("accompany", b"bass", "accompany", "bass"),
])
async def test_each_setting_is_applied_notified_and_reflected(name, payload, field, expected):
    c, actions = make()
    seen: list[State] = []
    c.add_listener(seen.append)
    state = await c.apply(name, payload)
    assert getattr(state, field) == expected
    assert getattr(c.state, field) == expected
    assert actions.states[-1] == state and seen == [state]


async def test_enabled_accepts_every_spelling_of_on():
    c, _ = make()
    for word in (b"true", b"on", b"1", b"ON", b"True"):
        await c.apply("enabled", b"off")
        assert (await c.apply("enabled", word)).enabled is True


@pytest.mark.parametrize("name, payload, reason", [
    ("enabled", b"yes", "not one of"),
    ("mode", b"solo", "not one of"),
    ("temperature", b"hot", "not a number"),
    ("temperature", b"nan", "not a number"),
    ("temperature", b"inf", "not a number"),
    ("temperature", b"1_0", "not a number"),
    ("temperature", b"0x1", "not a number"),
    ("temperature", b"", "not a number"),
    ("temperature", b"-0.1", "out of range"),
    ("temperature", b"2.01", "out of range"),
    ("silence_s", b"0.05", "out of range"),
    ("silence_s", b"11", "out of range"),
    ("silence_s", b"\xff\xfe", "not UTF-8"),
    ("variation", b"1.01", "out of range"),
    ("variation", b"-0.1", "out of range"),
    ("variation", b"nan", "not a number"),
    ("variation", b"", "not a number"),
    ("accompany", b"drums", "not one of bass|chords|voice"),
    ("mode", b"x" * (MAX_PAYLOAD + 1), "limit"),
    ("reset", b"x" * (MAX_PAYLOAD + 1), "limit"),
    ("tempo", b"120", "unknown command"),
    ("model", b"../../etc/passwd", "not a model name"),
    ("model", b"/tmp/evil.pt", "not a model name"),
    ("model", b"nosuch", "models_dir is not set"),
])
async def test_refused_commands_change_nothing(name, payload, reason):
    c, actions = make()
    seen: list[State] = []
    c.add_listener(seen.append)
    before = c.state
    with pytest.raises(CommandError) as err:
        await c.apply(name, payload)
    assert reason in err.value.reason
    assert c.state == before
    assert seen == [] and actions.states == [] and actions.calls == []


async def test_reset_and_panic_reach_the_engine_without_changing_state():
    c, actions = make()
    before = c.state
    assert await c.apply("reset", b"") == before
    assert await c.apply("panic", b"PRESS") == before
    assert actions.calls == ["reset", "panic"]


def test_models_are_the_pt_files_in_models_dir(tmp_path):
    (tmp_path / "jazz.safetensors").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / ".hidden.safetensors").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep.safetensors").write_bytes(b"")
    assert available_models(str(tmp_path)) == {"jazz": tmp_path / "jazz.safetensors"}
    assert available_models(str(tmp_path / "missing")) == {}


async def test_model_by_name_loads_from_models_dir(tmp_path):
    (tmp_path / "jazz.safetensors").write_bytes(b"")
    c, actions = make(str(tmp_path))
    state = await c.apply("model", b"jazz")
    assert state.model == "jazz"
    assert actions.loaded == [str(tmp_path / "jazz.safetensors")]
    assert (await c.apply("model", b"default")).model == "default"
    assert actions.loaded[-1] == "default"


async def test_unknown_model_names_the_available_ones(tmp_path):
    (tmp_path / "jazz.safetensors").write_bytes(b"")
    c, actions = make(str(tmp_path))
    with pytest.raises(CommandError, match=r"available: default, jazz"):
        await c.apply("model", b"rock")
    assert actions.loaded == []


async def test_failed_model_load_keeps_the_old_model(tmp_path):
    (tmp_path / "broken.safetensors").write_bytes(b"")
    c, actions = make(str(tmp_path))
    actions.fail_load = "checksum mismatch"
    with pytest.raises(CommandError, match="cannot load model 'broken': checksum mismatch"):
        await c.apply("model", b"broken")
    assert c.state.model == "default" and actions.states == []


async def test_a_failing_listener_does_not_undo_a_command():
    c, _ = make()

    def broken(_state: State) -> None:
        raise RuntimeError("listener bug")

    c.add_listener(broken)
    assert (await c.apply("mode", b"off")).mode == "off"
    assert c.state.mode == "off"


def test_set_ports_is_reflected_in_state():
    c, actions = make()
    state = c.set_ports(input="Keystation:in")
    assert state.input == "Keystation:in" and state.output == "virtual"
    assert actions.states[-1] == state


def test_stats_percentiles_and_bounded_ring():
    s = Stats(started_at=0.0)
    assert s.metrics(now=1.0)["step_p50_us"] is None
    for us in range(1, 101):
        s.add_step(float(us))
    m = s.metrics(now=12.34)
    assert (m["step_p50_us"], m["step_p99_us"], m["uptime_s"]) == (50.0, 99.0, 12.3)
    for _ in range(10_000):
        s.add_step(1.0)
    assert len(s.step_us) == s.step_us.maxlen


# ------------------------------------------------------------------------------------------- CC

CC = cfgmod.CCConfig()  # temperature=1, silence_s=0 (off), mode=20, enabled=21


@pytest.mark.parametrize("number, value, expected", [
    (1, 0, ("temperature", b"0")),
    (1, 127, ("temperature", b"2")),
    (1, 64, ("temperature", b"1.008")),
    (20, 0, ("mode", b"off")),
    (20, 42, ("mode", b"off")),
    (20, 43, ("mode", b"call")),
    (20, 85, ("mode", b"call")),
    (20, 86, ("mode", b"accompany")),
    (21, 63, ("enabled", b"off")),
    (21, 64, ("enabled", b"on")),
    (64, 127, None),   # sustain belongs to the music
    (7, 100, None),    # volume: not mapped
    (0, 10, None),     # 0 means "no mapping", never controller 0
    (1, 128, None),
])
def test_cc_mapping_defaults(number, value, expected):
    assert cc_command(CC, number, value) == expected


def test_cc_silence_when_mapped():
    cc = cfgmod.CCConfig(silence_s=16)
    assert cc_command(cc, 16, 0) == ("silence_s", b"0.1")
    assert cc_command(cc, 16, 127) == ("silence_s", b"10")


def test_cc_variation_when_mapped():
    assert cc_command(CC, 22, 127) is None  # unmapped by default
    cc = cfgmod.CCConfig(variation=22)
    assert cc_command(cc, 22, 0) == ("variation", b"0")
    assert cc_command(cc, 22, 127) == ("variation", b"1")
    assert cc_command(cc, 22, 64) == ("variation", b"0.504")
    with pytest.raises(cfgmod.ConfigError, match="one command only"):
        cfgmod.parse({"midi": {"cc": {"variation": 20}}})  # CC20 is the mode's


@pytest.mark.parametrize("name, rng, cc_number", [("variation", cfgmod.VARIATION, 22), ("temperature", cfgmod.TEMPERATURE, 1),
                                                 ("silence_s", cfgmod.SILENCE_S, 23)])
def test_each_live_range_is_defined_once_and_config_mqtt_cc_and_discovery_agree(name, rng, cc_number):
    """One definition (config.VARIATION, TEMPERATURE, SILENCE_S) read by the config check, set/...,
    the CC scaling and the Home Assistant number: their ends are the same numbers. (Issue #14: the
    temperature was 0-2 in config and 0.05-2 over MQTT, so a configured 0 could never be set back.)"""
    lo, hi = rng.lo, rng.hi
    field = {f.name: f for f in dataclasses.fields(cfgmod.EngineConfig)}[name]
    assert field.metadata["range"] == rng  # the config check
    for ok in (lo, hi):
        assert getattr(cfgmod.parse({"engine": {name: ok}}).engine, name) == ok
    for bad in (lo - 0.01, hi + 0.01):
        with pytest.raises(cfgmod.ConfigError, match=f"engine.{name} = {bad}: must be between {lo} and {hi}"):
            cfgmod.parse({"engine": {name: bad}})
    c, _ = make()  # MQTT and CC share Controller.validate
    assert c.validate(name, f"{lo:g}".encode()) == lo and c.validate(name, f"{hi:g}".encode()) == hi
    for bad in (lo - 0.01, hi + 0.01):
        with pytest.raises(CommandError, match=f"out of range {lo:g}-{hi:g}"):
            c.validate(name, f"{bad:g}".encode())
    cc = cfgmod.CCConfig(**{name: cc_number, **({"temperature": 0} if name != "temperature" else {})})
    assert [float(cc_command(cc, cc_number, v)[1]) for v in (0, 127)] == [lo, hi]  # the knob's ends are the range's ends
    number = {topic.split("/")[-2]: json.loads(payload) for topic, payload in discovery.configs(cfgmod.MqttConfig())}[name]
    assert (number["min"], number["max"], number["step"]) == (lo, hi, rng.step)
    assert number["command_topic"].endswith(f"/set/{name}")
    assert name in SETTINGS


def test_mode_is_an_enum_everywhere():
    assert cfgmod.parse({"engine": {"mode": "accompany"}}).engine.mode is cfgmod.Mode.ACCOMPANY
    c, _ = make()
    assert c.validate("mode", b"off") is cfgmod.Mode.OFF
    with pytest.raises(cfgmod.ConfigError, match="must be 'call' | 'accompany' | 'off'"):
        cfgmod.parse({"engine": {"mode": "jam"}})
    assert json.loads(State(True, cfgmod.Mode.CALL, 0.9, 0.8, "default", "", "", 0, 0).to_json())["mode"] == "call"


def test_accompany_styles_are_the_engines():
    from ripieno.model.play.engine import ACCOMPANY_STYLES

    assert cfgmod.ACCOMPANY_STYLES == ACCOMPANY_STYLES
    select = {topic.split("/")[-2]: json.loads(payload) for topic, payload in discovery.configs(cfgmod.MqttConfig())}["accompany"]
    assert select["options"] == list(ACCOMPANY_STYLES) and select["command_topic"].endswith("/set/accompany")


async def test_every_cc_value_is_a_valid_command():
    """A whole knob sweep goes through the controller without one refusal."""
    cc = cfgmod.CCConfig(silence_s=16, variation=22)
    c, _ = make()
    for number in (cc.temperature, cc.silence_s, cc.mode, cc.enabled, cc.variation):
        for value in range(128):
            cmd = cc_command(cc, number, value)
            assert cmd is not None
            await c.apply(*cmd)
    assert c.state.temperature == 2.0 and c.state.mode == "accompany" and c.state.enabled is True and c.state.variation == 1.0



@pytest.mark.parametrize("text", ["١", "１", "1.٥", "٠.5"])
def test_non_ascii_digits_are_not_numbers(text):
    """Issue #15: Python's float() reads Arabic-Indic and full-width digits; a temperature of "١" was 1.0."""
    with pytest.raises(CommandError, match="is not a number"):
        parse_number(text, 0.0, 2.0)


def test_setting_commands_are_synchronous_only_a_model_load_awaits():
    """Issue #14: every command was a coroutine; now a setting, reset or panic applies at once."""
    c, actions = make()
    state = c.apply_now("temperature", b"1.5")
    assert state.temperature == 1.5 and actions.states[-1].temperature == 1.5
    assert c.apply_now("panic", b"") == state and actions.calls[-1] == "panic"
    with pytest.raises(CommandError, match="apply, not apply_now"):
        c.apply_now("model", b"default")
