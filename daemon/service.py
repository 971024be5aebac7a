"""The daemon's async shell: open ports, run until SIGTERM/SIGINT, close everything, exit 0.

Skeleton for the foundation; the engine, scheduler and MQTT attach here.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import rtmidi

from . import ports
from .config import Config, as_dict

log = logging.getLogger(__name__)


def _open(kind: str, api: str, wanted: str) -> rtmidi.MidiIn | rtmidi.MidiOut:
    cls = rtmidi.MidiIn if kind == "in" else rtmidi.MidiOut
    client = ports.jack_client_name(kind) if api == "jack" else ports.CLIENT_NAME
    port = cls(ports.rtmidi_api(api), name=client)
    if wanted == ports.VIRTUAL:
        port.open_virtual_port(kind)
        if api == "jack" and client != ports.CLIENT_NAME:
            ports.jack_alias(f"{client}:{kind}", f"{ports.CLIENT_NAME}:{kind}")
        log.info("opened virtual %s port %s:%s", "input" if kind == "in" else "output", ports.CLIENT_NAME, kind)
        return port
    idx = ports.find_port(port.get_ports(), wanted)
    if idx is None:
        available = ", ".join(port.get_ports()) or "none"
        port.delete()
        raise ports.MidiSystemError(f"no {'input' if kind == 'in' else 'output'} port matches {wanted!r} (available: {available})")
    name = port.get_ports()[idx]
    port.open_port(idx, kind)
    log.info("connected %s to %s", kind, name)
    return port


async def serve(cfg: Config) -> int:
    api = ports.resolve_api(cfg.midi.api)
    log.info("config %s: %s", cfg.source, as_dict(cfg) | {"mqtt": "..."})
    log.info("MIDI api: %s", api)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    midi_in = _open("in", api, cfg.midi.input)
    midi_out = _open("out", api, cfg.midi.output)
    try:
        log.info("ripieno is up (mode %s)", cfg.engine.mode)
        await stop.wait()
        log.info("stopping")
    finally:
        for p in (midi_in, midi_out):
            p.close_port()
            p.delete()
    return 0


def run(cfg: Config) -> int:
    return asyncio.run(serve(cfg))
