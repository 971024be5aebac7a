"""Home Assistant MQTT discovery: retained configs that make ripieno appear as one device.

Pure data: which entities exist and how they read {base}/state and write {base}/set/...; the
MQTT loop publishes them retained on every connect and when Home Assistant says it is online.
Every entity uses {base}/status as availability, so a dead daemon (Last Will) greys it out.
"""

from __future__ import annotations

import json
import re
from importlib.metadata import PackageNotFoundError, version

from .config import ACCOMPANY_STYLES, MODES, SILENCE_S, TEMPERATURE, VARIATION, MqttConfig

BIRTH_PAYLOAD = b"online"


def node_id(base_topic: str) -> str:
    """A discovery node id from the base topic: several instances under distinct bases stay distinct."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", base_topic)


def birth_topic(cfg: MqttConfig) -> str:
    """Home Assistant publishes `online` here when it (re)starts and needs the configs again."""
    return f"{cfg.discovery_prefix}/status"


def _sw_version() -> str:
    try:
        return version("ripieno")
    except PackageNotFoundError:
        return "unknown"


def _entities(base: str) -> list[tuple[str, str, dict[str, object]]]:
    """(component, object id, component-specific config) for every entity ripieno offers."""
    def tpl(key: str) -> str:
        return "{{ value_json.%s }}" % key

    return [
        ("switch", "enabled", {
            "name": "Enabled", "icon": "mdi:piano",
            "command_topic": f"{base}/set/enabled", "payload_on": "on", "payload_off": "off",
            "state_topic": f"{base}/state", "value_template": "{{ 'on' if value_json.enabled else 'off' }}",
            "state_on": "on", "state_off": "off",
        }),
        ("select", "mode", {
            "name": "Mode", "icon": "mdi:account-music",
            "command_topic": f"{base}/set/mode", "options": list(MODES),
            "state_topic": f"{base}/state", "value_template": tpl("mode"),
        }),
        ("number", "temperature", {
            "name": "Temperature", "icon": "mdi:dice-multiple",  # a sampling temperature, not a thermometer
            "command_topic": f"{base}/set/temperature", "min": TEMPERATURE.lo, "max": TEMPERATURE.hi, "step": TEMPERATURE.step,
            "mode": "slider", "state_topic": f"{base}/state", "value_template": tpl("temperature"),
        }),
        ("number", "silence_s", {
            "name": "Silence before answer", "icon": "mdi:timer-sand",
            "command_topic": f"{base}/set/silence_s", "min": SILENCE_S.lo, "max": SILENCE_S.hi, "step": SILENCE_S.step,
            "unit_of_measurement": "s", "mode": "slider",
            "state_topic": f"{base}/state", "value_template": tpl("silence_s"),
        }),
        ("number", "variation", {
            "name": "Variation", "icon": "mdi:shuffle-variant",
            "command_topic": f"{base}/set/variation", "min": VARIATION.lo, "max": VARIATION.hi, "step": VARIATION.step,
            "mode": "slider", "state_topic": f"{base}/state", "value_template": tpl("variation"),
        }),
        ("select", "accompany", {
            "name": "Accompaniment", "icon": "mdi:music-clef-bass",
            "command_topic": f"{base}/set/accompany", "options": list(ACCOMPANY_STYLES),
            "state_topic": f"{base}/state", "value_template": tpl("accompany"),
        }),
        ("sensor", "notes_in", {
            "name": "Notes in", "icon": "mdi:music-note", "state_class": "total_increasing",
            "state_topic": f"{base}/state", "value_template": tpl("notes_in"),
        }),
        ("sensor", "notes_out", {
            "name": "Notes out", "icon": "mdi:music-note-outline", "state_class": "total_increasing",
            "state_topic": f"{base}/state", "value_template": tpl("notes_out"),
        }),
        ("sensor", "tempo_bpm", {
            "name": "Tempo", "icon": "mdi:metronome", "unit_of_measurement": "bpm", "state_class": "measurement",
            "suggested_display_precision": 1,
            "state_topic": f"{base}/state", "value_template": tpl("tempo_bpm"),  # null renders None: unknown
        }),
        ("sensor", "beat_confidence", {
            "name": "Beat confidence", "icon": "mdi:target", "state_class": "measurement",
            "suggested_display_precision": 2,  # 0..1
            "state_topic": f"{base}/state", "value_template": tpl("beat_confidence"),
        }),
        # buttons press the existing commands: any payload is a press (cmd/reset, cmd/panic)
        ("button", "reset", {"name": "Reset", "icon": "mdi:restart", "command_topic": f"{base}/cmd/reset",
                             "payload_press": "PRESS"}),
        ("button", "panic", {"name": "Panic", "icon": "mdi:alarm-light", "command_topic": f"{base}/cmd/panic",
                             "payload_press": "PRESS"}),
    ]


def configs(cfg: MqttConfig) -> list[tuple[str, bytes]]:
    """(topic, JSON payload) of every retained discovery config for this instance."""
    base, node = cfg.base_topic, node_id(cfg.base_topic)
    device = {
        "identifiers": [f"ripieno_{node}"],
        "name": f"ripieno ({base})",
        "manufacturer": "ripieno",
        "model": "MIDI accompaniment daemon",
        "sw_version": _sw_version(),
    }
    out = []
    for component, obj, specific in _entities(base):
        payload = {
            **specific,
            "unique_id": f"ripieno_{node}_{obj}",
            "availability_topic": f"{base}/status",
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device,
        }
        out.append((f"{cfg.discovery_prefix}/{component}/{node}/{obj}/config", json.dumps(payload).encode()))
    return out
