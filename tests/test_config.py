"""config.toml: the shipped file is valid and complete; every kind of mistake is one clear line."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import tomllib

import pytest

from peers import BIN, REPO
from ripieno.daemon import config as cfgmod


def test_shipped_config_matches_defaults():
    cfg = cfgmod.load(REPO / "config.toml")
    assert cfgmod.as_dict(cfg) == cfgmod.as_dict(cfgmod.Config())


def test_shipped_config_documents_every_key():
    data = tomllib.loads((REPO / "config.toml").read_text())

    def keys(obj, prefix=""):
        for f in dataclasses.fields(obj):
            if f.name == "source" and not prefix:  # Config.source is the file's name; [tempo] source is a key
                continue
            v = getattr(obj, f.name)
            if dataclasses.is_dataclass(v):
                yield from keys(v, f"{prefix}{f.name}.")
            else:
                yield f"{prefix}{f.name}"

    def lookup(d, dotted):
        for part in dotted.split("."):
            d = d[part]
        return d

    for key in keys(cfgmod.Config()):
        lookup(data, key)  # KeyError names the missing key


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[engine]\ntemprature = 1.0\n", "unknown key engine.temprature"),
        ("[engine]\ntemperature = 'hot'\n", "engine.temperature = 'hot': must be a number"),
        ("[engine]\ntemperature = 7.0\n", "engine.temperature = 7.0: must be between 0.0 and 2.0"),
        ("[engine]\nmode = 'loud'\n", "engine.mode = 'loud': must be 'call' | 'accompany' | 'off'"),
        ("[midi]\nchannel = 17\n", "midi.channel = 17: must be between 1 and 16"),
        ("[midi]\nchannel = true\n", "midi.channel = True: must be an integer"),
        ("[mqtt]\nenabled = 'yes'\n", "mqtt.enabled = 'yes': must be true or false"),
        ("[mqtt]\nport = 0\n", "mqtt.port = 0: must be between 1 and 65535"),
        ("[nonsense]\nx = 1\n", "unknown key nonsense"),
        ("midi = 3\n", "[midi] must be a table"),
        ("[engine]\nlow_pitch = 90\nhigh_pitch = 80\n", "engine.low_pitch (90) must not exceed"),
        ("[midi.cc]\ntemperature = 64\n", "controller 64 (sustain)"),
        ("[engine\n", "not valid TOML"),
        ("[tempo]\nsource = 'daw'\n", "tempo.source = 'daw': must be 'player' | 'midi_clock' | 'link'"),
        ("[tempo]\nsource = 1\n", "tempo.source = 1: must be 'player' | 'midi_clock' | 'link'"),
        ("[tempo]\nbeats_per_bar = 0\n", "tempo.beats_per_bar = 0: must be between 1 and 12"),
        ("[tempo]\nbeats_per_bar = 13\n", "tempo.beats_per_bar = 13: must be between 1 and 12"),
        ("[tempo]\nbeats_per_bar = 3.5\n", "tempo.beats_per_bar = 3.5: must be an integer"),
        ("[tempo]\nbpm = 120\n", "unknown key tempo.bpm (allowed: source, beats_per_bar)"),
        ("tempo = 'clock'\n", "[tempo] must be a table"),
    ],
)
def test_bad_config_is_refused_with_the_key_named(tmp_path, toml, needle):
    p = tmp_path / "config.toml"
    p.write_text(toml)
    with pytest.raises(cfgmod.ConfigError) as err:
        cfgmod.load(p)
    assert needle in str(err.value)
    assert str(p) in str(err.value)
    assert "\n" not in str(err.value)


def test_tempo_section_defaults_and_values():
    assert cfgmod.Config().tempo == cfgmod.TempoConfig(source="player", beats_per_bar=4)
    for source in ("player", "midi_clock", "link"):
        for bar in (1, 3, 12):
            cfg = cfgmod.parse({"tempo": {"source": source, "beats_per_bar": bar}})
            assert (cfg.tempo.source, cfg.tempo.beats_per_bar) == (source, bar)
    assert cfgmod.as_dict(cfgmod.Config())["tempo"] == {"source": "player", "beats_per_bar": 4}


def test_int_is_accepted_for_float_and_overrides_validate():
    cfg = cfgmod.parse({"engine": {"temperature": 1}})
    assert cfg.engine.temperature == 1.0 and isinstance(cfg.engine.temperature, float)
    cfg2 = cfgmod.override(cfg, "engine", temperature=0.5, mode=None)
    assert cfg2.engine.temperature == 0.5 and cfg2.engine.mode == "call"
    with pytest.raises(cfgmod.ConfigError, match="command line: engine.temperature"):
        cfgmod.override(cfg, "engine", temperature=9.0)


def test_broken_config_exits_2_with_one_line(tmp_path):
    p = tmp_path / "config.toml"
    p.write_text("[engine]\ntemperature = 9\n")
    r = subprocess.run([str(BIN / "ripieno"), "run", "--config", str(p)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "engine.temperature" in lines[0] and str(p) in lines[0]
    assert "Traceback" not in r.stderr


def test_missing_config_exits_2(tmp_path):
    r = subprocess.run([str(BIN / "ripieno"), "run", "--config", str(tmp_path / "nope.toml")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "no such config file" in r.stderr


def _fifo(tmp_path) -> str:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return str(path)


HOSTILE = {
    "deep array": lambda tmp: "x = " + "[" * 5000 + "]" * 5000 + "\n",
    "empty host": lambda tmp: '[mqtt]\nenabled = true\nhost = ""\n',
    "long base_topic": lambda tmp: '[mqtt]\nbase_topic = "' + "a" * 70000 + '"\n',
    "discovery prefix #": lambda tmp: '[mqtt]\ndiscovery_prefix = "#"\n',
    "discovery prefix +": lambda tmp: '[mqtt]\ndiscovery_prefix = "home/+"\n',
    "password file /dev/zero": lambda tmp: '[mqtt]\nenabled = true\nusername = "u"\npassword_file = "/dev/zero"\n',
    "password file fifo": lambda tmp: f'[mqtt]\nenabled = true\nusername = "u"\npassword_file = "{_fifo(tmp)}"\n',
    "models_dir missing": lambda tmp: f'[engine]\nmodels_dir = "{tmp / "nope"}"\n',
    "ca file not a certificate": lambda tmp: (tmp / "ca.pem").write_text("not a cert") and f'[mqtt]\nenabled = true\ntls = true\nca_file = "{tmp / "ca.pem"}"\n',
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_configs_are_refused_at_start_in_one_line_exit_2(tmp_path, case):
    """Issue #15: these crashed (RecursionError), hung (a FIFO), read /dev/zero until memory ran out,
    or were accepted and then killed the MQTT task after the ports had opened."""
    p = tmp_path / "config.toml"
    p.write_text(HOSTILE[case](tmp_path))
    r = subprocess.run([str(BIN / "ripieno"), "run", "--config", str(p)], capture_output=True, text=True, timeout=30)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-800:]
    assert "config error" in lines[0] and len(lines[0]) < 400, lines[0]


@pytest.mark.parametrize("special", ["/dev/zero", "fifo", "dir"])
def test_a_config_that_is_not_a_regular_file_is_one_line(tmp_path, special):
    path = {"/dev/zero": "/dev/zero", "fifo": _fifo(tmp_path), "dir": str(tmp_path)}[special]
    r = subprocess.run([str(BIN / "ripieno"), "run", "--config", path], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "not a regular file" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
