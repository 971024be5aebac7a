"""Session fixtures: one private JACK server and one mosquitto broker for the whole test run.

Integration tests meet real peers (see peers.py); unit tests use none of these fixtures.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from peers import Broker, Daemon, JackServer, Keyboard, Synth, free_port

# Set before anything in this process makes a JACK client: never autostart, never touch the user's server.
JACK_NAME = f"ripieno-test-{os.getpid()}"
os.environ["JACK_DEFAULT_SERVER"] = JACK_NAME
os.environ["JACK_NO_START_SERVER"] = "1"
# The test synth's and keyboard's rtmidi callbacks run in JACK's process thread and need the GIL:
# keep the wait short, as the daemon does (service.GIL_SWITCH_S).
sys.setswitchinterval(0.0005)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use a real peer are integration tests, whether or not they say so."""
    peers = {"jack", "jack_server", "broker", "keyboard", "synth", "daemon", "make_broker"}
    for item in items:
        if peers & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def jack_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JackServer]:
    server = JackServer(JACK_NAME, tmp_path_factory.mktemp("jack"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def jack(jack_server: JackServer) -> JackServer:
    """The session's JACK server, checked before every test: one that stopped answering is
    restarted, so a jackd hang costs the test it happened in (and its rerun), not the session."""
    if not jack_server.healthy():
        import logging

        logging.getLogger("tests").warning("jackd %s stopped answering: restarting it", jack_server.name)
        jack_server.restart()
    return jack_server


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("mqtt"))
    b.start()
    yield b
    b.stop()


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """A fresh broker with extra mosquitto.conf lines (auth, TLS), stopped after the test."""
    made: list[Broker] = []

    def make(extra_conf: str = "", port: int | None = None) -> Broker:
        b = Broker(tmp_path / f"broker{len(made)}", extra_conf, port or free_port())
        b.start()
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def synth(jack: JackServer) -> Iterator[Synth]:
    s = Synth()
    jack.wait_for_port(s.port)
    yield s
    s.close()


@pytest.fixture
def keyboard(jack: JackServer) -> Iterator[Keyboard]:
    k = Keyboard()
    jack.wait_for_port(k.port)
    yield k
    k.close()


@pytest.fixture
def daemon(jack: JackServer, tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Start `ripieno run` with a config text; every daemon started is stopped after the test."""
    started: list[Daemon] = []

    def start(config_text: str, args: list[str] | None = None, env: dict[str, str] | None = None, entry: list[str] | None = None) -> Daemon:
        d = Daemon(config_text, tmp_path / f"daemon{len(started)}", jack.env() | (env or {}), args, entry)
        started.append(d)
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.stop()
