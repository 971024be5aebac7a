"""The MQTT control plane: a topic contract over the command layer, built never to disturb the music.

Topics (`{base}` = [mqtt] base_topic):
    {base}/status        retained online | offline (the Last Will is a retained offline)
    {base}/state         retained State JSON, on every change, every (re)connect, and with metrics
                         when the note counts moved (not per note: that would flood the broker)
    {base}/set/NAME      enabled | mode | temperature | silence_s | model | variation | accompany  (QoS 1)
    {base}/cmd/NAME      reset | panic                                           (QoS 1)
    {base}/error         one JSON per refused command: {"topic", "payload" (200 chars), "reason"}
    {base}/metrics       every 10 s: notes, step p50/p99 in us, dropped, refused, uptime

Why it cannot disturb the music: it runs as its own task on the daemon's loop and only ever
awaits the network inside that task; state changes reach it through a listener that sets an
event (the latest state is published, intermediate ones coalesce); the incoming queue is
bounded and drops (and counts) what overflows; a token bucket refuses command floods; a model
load runs in its own task so a `panic` is never queued behind it.

Reconnects follow the aiomqtt idiom: any MqttError ends the session, we wait an exponential
backoff with jitter capped at RETRY_CAP_S, connect again, resubscribe and republish status and
state. Refused credentials are logged once, clearly, and retried every AUTH_RETRY_S: the music
plays on, and fixing the broker's password file brings ripieno back without a restart.
A retained message on a command topic, delivered when ripieno (re)subscribes, is ignored:
replaying it on every start and reconnect would silently undo later changes. It is answered on
{base}/error once per process (not on every reconnect), with the command that clears it
(`mosquitto_pub -r -n -t TOPIC`). (Brokers deliver a retained publish to subscribers already
connected as a live message: that one is applied, once. And clearing a retained message reaches
subscribers as a live empty payload: on set/ topics that is ignored without an answer.)
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import math
import os
import random
import shlex
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from . import discovery
from .commands import ACTIONS, SETTINGS, CommandError, Controller, State, Stats
from .commands import COMMAND_BURST, COMMAND_RATE, RateLimiter
from .config import Config, ConfigError, read_small_text

log = logging.getLogger(__name__)

PASSWORD_ENV = "RIPIENO_MQTT_PASSWORD"
METRICS_INTERVAL_S = 10.0
RETRY_FIRST_S = 0.25
RETRY_CAP_S = 4.0        # a restarted broker sees ripieno back well within 20 s
AUTH_RETRY_S = 30.0      # wrong credentials will not fix themselves quickly; don't hammer the broker
CONNECT_TIMEOUT_S = 5.0
KEEPALIVE_S = 15         # how fast a silently vanished broker is noticed
QUEUE_SIZE = 64          # incoming messages waiting to be handled; more are dropped and counted
ERROR_RATE = 20.0        # error replies per second: a flood is not answered by a flood
MAX_RETAINED_TOLD = 256  # distinct retained commands remembered as answered (bounded; beyond, each is answered)
MAX_RETAINED_KEY = 64    # payload bytes that tell one retained command from another
STOP_GRACE_S = 1.0       # on stop, time allowed to publish offline before giving up
OWN_ECHOES = 4           # recent own publishes per topic recognised as echoes
OWN_CORRECT_S = 1.0      # a spoofed status/state is corrected at most this often per topic


# ---------------------------------------------------------------------------------- pure pieces

def backoff_delay(attempt: int, rng: random.Random, first: float = RETRY_FIRST_S, cap: float = RETRY_CAP_S) -> float:
    """Exponential backoff with full jitter in [half, whole] of the step, never above cap."""
    step = min(cap, first * 2 ** min(attempt, 16))
    return step * (0.5 + 0.5 * rng.random())


def route(base: str, topic: str) -> str:
    """The command name for a topic under {base}/set/ or {base}/cmd/; CommandError otherwise."""
    rest = topic[len(base) + 1:] if topic.startswith(base + "/") else ""
    kind, _, name = rest.partition("/")
    if kind == "set" and name in SETTINGS:
        return name
    if kind == "cmd" and name in ACTIONS:
        return name
    known = [f"set/{n}" for n in SETTINGS] + [f"cmd/{n}" for n in ACTIONS]
    raise CommandError(f"unknown topic {rest[:60]!r} (known: {', '.join(known)})")


def retained_reason(topic: str) -> str:
    """Why a retained command is ignored, and the one command that removes it from the broker."""
    return (f"retained message ignored: ripieno never applies a retained command (the broker would replay it on every "
            f"start and reconnect). Publish commands without the retain flag, and clear this one with: "
            f"mosquitto_pub -r -n -t {shlex.quote(topic)}")


def error_payload(topic: str, payload: bytes, reason: str) -> bytes:
    return json.dumps({"topic": topic, "payload": payload[:800].decode("utf-8", "replace")[:200], "reason": reason}).encode()


def is_auth_error(exc: BaseException) -> bool:
    """True for a CONNACK that refuses the credentials (MQTT 3.1.1 codes 4/5, MQTT 5 codes 134/135)."""
    rc = getattr(exc, "rc", None)
    value = getattr(rc, "value", rc)
    return isinstance(exc, aiomqtt.MqttCodeError) and value in (4, 5, 134, 135)


def read_password(cfg: Config, env: Mapping[str, str]) -> str | None:
    """The password from RIPIENO_MQTT_PASSWORD, else the first line of password_file; never from the config itself."""
    if env.get(PASSWORD_ENV):
        return env[PASSWORD_ENV]
    path = cfg.mqtt.password_file
    if not path:
        return None
    lines = read_small_text(path, f"{cfg.source}: mqtt.password_file = {path!r}").splitlines()
    return lines[0] if lines else ""


def _check_tls_files(cfg: Config) -> None:
    """Load the CA, certificate and key once, as the TLS handshake will: a CA file that is no
    certificate, or a certificate and key that do not belong together, is refused at start (one
    line, exit 2) instead of failing every reconnect forever."""
    import ssl

    m = cfg.mqtt
    try:
        ctx = ssl.create_default_context(cafile=str(Path(m.ca_file).expanduser()) if m.ca_file else None)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(f"{cfg.source}: mqtt.ca_file = {m.ca_file!r}: not a usable CA certificate ({getattr(exc, 'reason', None) or exc})") from None
    if m.cert_file:
        try:
            ctx.load_cert_chain(str(Path(m.cert_file).expanduser()), str(Path(m.key_file).expanduser()) if m.key_file else None)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(f"{cfg.source}: mqtt.cert_file / key_file: not a certificate and its key ({getattr(exc, 'reason', None) or exc})") from None


def client_options(cfg: Config, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """aiomqtt.Client keyword arguments for this config; ConfigError (one line) for unusable files.

    The daemon can call this at start to refuse a bad [mqtt] section with exit 2 before any port opens.
    """
    m = cfg.mqtt
    env = os.environ if env is None else env
    opts: dict[str, Any] = {
        "hostname": m.host,
        "port": m.port,
        "identifier": f"ripieno-{discovery.node_id(m.base_topic)}-{os.getpid()}",
        "will": aiomqtt.Will(f"{m.base_topic}/status", b"offline", qos=1, retain=True),
        "timeout": CONNECT_TIMEOUT_S,
        "keepalive": KEEPALIVE_S,
        "max_queued_incoming_messages": QUEUE_SIZE,
        "logger": logging.getLogger(f"{__name__}.client"),  # paho's own lines (e.g. the TLS alert that ended a connect)
    }
    password = read_password(cfg, env)
    if m.username:
        opts["username"] = m.username
        opts["password"] = password
    elif password is not None:
        raise ConfigError(f"{cfg.source}: mqtt.username is empty but a password is given (set username, or drop the password)")
    if not m.tls:
        for key in ("ca_file", "cert_file", "key_file"):
            if getattr(m, key):
                raise ConfigError(f"{cfg.source}: mqtt.{key} is set but mqtt.tls = false (set tls = true)")
        return opts
    if m.key_file and not m.cert_file:
        raise ConfigError(f"{cfg.source}: mqtt.key_file needs mqtt.cert_file")
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(m, key)
        if path and not Path(path).expanduser().is_file():
            raise ConfigError(f"{cfg.source}: mqtt.{key} = {path!r}: no such file")
    _check_tls_files(cfg)
    opts["tls_params"] = aiomqtt.TLSParameters(
        ca_certs=str(Path(m.ca_file).expanduser()) if m.ca_file else None,
        certfile=str(Path(m.cert_file).expanduser()) if m.cert_file else None,
        keyfile=str(Path(m.key_file).expanduser()) if m.key_file else None,
    )
    return opts


def _counting_queue(stats: Stats) -> type[asyncio.Queue]:
    """A bounded queue class for aiomqtt that drops silently and counts, instead of logging each loss."""

    class DroppingQueue(asyncio.Queue):
        def put_nowait(self, item: Any) -> None:
            if self.full():
                stats.commands_dropped += 1
                return
            super().put_nowait(item)

    return DroppingQueue


# ----------------------------------------------------------------------------------- async shell

@dataclass
class _Session:
    """One connection's worth of work; a fresh one per (re)connect."""

    cfg: Config
    controller: Controller
    client: aiomqtt.Client
    dirty: asyncio.Event
    closing: asyncio.Event   # set when ripieno stops: say offline, disconnect
    metrics_interval: float
    limiter: RateLimiter
    error_limiter: RateLimiter
    loaders: set[asyncio.Task]  # model loads outlive a session: a broker hiccup must not cancel one
    retained_told: set[tuple[str, bytes]]  # retained commands already answered: once per process, not per reconnect
    connected: bool = False
    # What ripieno last published on its own status/state (a few, since echoes may arrive late):
    # anything else arriving there is someone overwriting the truth, and is corrected.
    published: dict[str, deque[bytes]] = field(default_factory=dict)
    corrected_at: dict[str, float] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return self.cfg.mqtt.base_topic

    async def run(self) -> None:
        """Announce, then serve until closing (publish offline, return) or an MqttError (raise)."""
        await self.announce()
        tasks = {
            asyncio.create_task(self.consume(), name="mqtt-consume"),
            asyncio.create_task(self.publish_loop(), name="mqtt-publish"),
        }
        stopper = asyncio.create_task(self.closing.wait(), name="mqtt-stop")
        try:
            done, _ = await asyncio.wait(tasks | {stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks | {stopper}:
                t.cancel()
            await asyncio.gather(*tasks, stopper, return_exceptions=True)
        for t in done - {stopper}:
            t.result()  # re-raise the MqttError that ended the session
        if self.closing.is_set():
            await self.client.publish(f"{self.base}/status", b"offline", qos=1, retain=True, timeout=STOP_GRACE_S)
            log.info("MQTT: published offline, disconnecting")

    async def announce(self) -> None:
        """Subscribe, then publish status, state and discovery: what every (re)connect must redo."""
        m = self.cfg.mqtt
        await self.client.subscribe([(f"{self.base}/set/#", 1), (f"{self.base}/cmd/#", 1),
                                     (f"{self.base}/status", 1), (f"{self.base}/state", 1)])
        if m.discovery:
            await self.client.subscribe(discovery.birth_topic(m), qos=1)
        await self.publish_own(f"{self.base}/status", b"online")
        self.dirty.clear()
        await self.publish_state(self.controller.state)
        if m.discovery:
            await self.publish_discovery()

    async def publish_state(self, state: State) -> None:
        await self.publish_own(f"{self.base}/state", state.to_json().encode())

    async def publish_own(self, topic: str, payload: bytes) -> None:
        """Publish retained on one of ripieno's own topics, remembering it as the truth there."""
        self.published.setdefault(topic, deque(maxlen=OWN_ECHOES)).append(payload)
        await self.client.publish(topic, payload, qos=1, retain=True)

    async def guard_own(self, topic: str, payload: bytes) -> None:
        """A message on our own status/state that we did not publish: someone overwrote it (a
        spoofed offline, say). Republish the truth at once, at most once a second per topic (two
        ripienos sharing a base topic would otherwise fight without end; the log says so)."""
        if payload in self.published.get(topic, ()):
            return  # our own, echoed back
        now = time.monotonic()
        if now - self.corrected_at.get(topic, -math.inf) < OWN_CORRECT_S:
            return
        self.corrected_at[topic] = now
        log.warning("MQTT: someone else published on %s; republishing ripieno's own (another ripieno on the same base_topic?)", topic)
        if topic.endswith("/status"):
            await self.publish_own(topic, b"offline" if self.closing.is_set() else b"online")
        else:
            await self.publish_state(self.controller.state)

    async def publish_discovery(self) -> None:
        configs = discovery.configs(self.cfg.mqtt)
        for topic, payload in configs:
            await self.client.publish(topic, payload, qos=1, retain=True)
        log.info("MQTT: published %d Home Assistant discovery configs", len(configs))

    async def publish_loop(self) -> None:
        """Publish the latest state when it changed; metrics (and moved note counts) every interval."""
        loop = asyncio.get_running_loop()
        next_metrics = loop.time() + self.metrics_interval
        counts = self._counts()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_metrics - loop.time())):
                    await self.dirty.wait()
            if self.dirty.is_set():
                self.dirty.clear()
                counts = self._counts()
                await self.publish_state(self.controller.state)
            if loop.time() >= next_metrics:
                next_metrics = max(next_metrics + self.metrics_interval, loop.time())
                metrics = self.controller.stats.metrics()
                await self.client.publish(f"{self.base}/metrics", json.dumps(metrics).encode(), qos=0)
                if self._counts() != counts:
                    counts = self._counts()
                    await self.publish_state(self.controller.state)

    def _counts(self) -> tuple[int, int]:
        return self.controller.stats.notes_in, self.controller.stats.notes_out

    async def consume(self) -> None:
        birth = discovery.birth_topic(self.cfg.mqtt) if self.cfg.mqtt.discovery else None
        async for message in self.client.messages:
            topic = message.topic.value
            payload = _as_bytes(message.payload)
            if topic == birth:
                if payload.strip() == discovery.BIRTH_PAYLOAD:
                    await self.publish_discovery()
                continue
            if topic in (f"{self.base}/status", f"{self.base}/state"):
                await self.guard_own(topic, payload)
                continue
            await self.handle(topic, payload, bool(message.retain))

    async def handle(self, topic: str, payload: bytes, retained: bool) -> None:
        """Rate-limit, route and apply one command; every refusal is answered on {base}/error.
        A retained command is never applied (answered once: ignore_retained); an empty set/...
        is someone clearing a retained one, ignored without an answer."""
        if retained:
            await self.ignore_retained(topic, payload)
            return
        if not payload and topic.startswith(f"{self.base}/set/"):
            # what a subscriber receives when someone clears a retained set/... (mosquitto_pub -r -n):
            # no setting is empty, and answering the clean-up with an error would only confuse
            log.debug("MQTT: ignored an empty %s (a retained message being cleared)", topic)
            return
        try:
            if not self.limiter.allow(time.monotonic()):
                raise CommandError(f"rate limit: more than {COMMAND_RATE:g} commands per second")
            name = route(self.base, topic)
            if name == "model":  # a load can take seconds: never queue a panic behind it
                self.controller.validate(name, payload)
                task = asyncio.create_task(self._apply_reporting(topic, name, payload))
                self.loaders.add(task)
                task.add_done_callback(self.loaders.discard)
                return
            await self.controller.apply(name, payload)
        except CommandError as exc:
            await self.refuse(topic, payload, exc.reason)

    async def ignore_retained(self, topic: str, payload: bytes) -> None:
        """A retained command is never applied; the first delivery of each is answered with how to clear it."""
        key = (topic, payload[:MAX_RETAINED_KEY])
        if key in self.retained_told:
            log.debug("MQTT: ignored retained %s again", topic)
            return
        if await self.refuse(topic, payload, retained_reason(topic), logging.WARNING) and len(self.retained_told) < MAX_RETAINED_TOLD:
            self.retained_told.add(key)  # not answered (an error flood): the next delivery tries again

    async def _apply_reporting(self, topic: str, name: str, payload: bytes) -> None:
        try:
            await self.controller.apply(name, payload)
        except CommandError as exc:
            with contextlib.suppress(aiomqtt.MqttError):  # this session may be gone by now: then it is only logged
                await self.refuse(topic, payload, exc.reason)

    async def refuse(self, topic: str, payload: bytes, reason: str, level: int = logging.INFO) -> bool:
        """Count the refusal and answer it on {base}/error; False when the error rate limit kept it unanswered."""
        stats = self.controller.stats
        stats.commands_refused += 1
        if not self.error_limiter.allow(time.monotonic()):  # a flood is neither answered nor logged line by line
            stats.commands_dropped += 1
            log.debug("MQTT: refused %s without reply: %s", topic, reason)
            return False
        log.log(level, "MQTT: refused %s: %s", topic, reason)
        await self.client.publish(f"{self.base}/error", error_payload(topic, payload, reason), qos=0)
        return True


def _as_bytes(payload: object) -> bytes:
    if payload is None:
        return b""
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return str(payload).encode()


async def run_mqtt(
    cfg: Config,
    controller: Controller,
    stop: asyncio.Event,
    *,
    metrics_interval: float = METRICS_INTERVAL_S,
    env: Mapping[str, str] | None = None,
) -> None:
    """Keep ripieno on the broker until stop is set; then publish offline and return.

    Raises ConfigError (one line) only at the start, for an unreadable password, CA or key file;
    every later failure is logged and retried, and never reaches the music.
    """
    m = cfg.mqtt
    options = client_options(cfg, env) | {"queue_type": _counting_queue(controller.stats)}
    where = f"{m.host}:{m.port}{' (TLS)' if m.tls else ''}"
    dirty, closing = asyncio.Event(), asyncio.Event()
    loaders: set[asyncio.Task] = set()
    retained_told: set[tuple[str, bytes]] = set()

    def on_state(_state: State) -> None:
        dirty.set()

    controller.add_listener(on_state)
    unquiet = _quiet_socket_race(asyncio.get_running_loop())
    limiter, error_limiter = RateLimiter(COMMAND_RATE, COMMAND_BURST), RateLimiter(ERROR_RATE, int(ERROR_RATE))
    rng = random.Random()
    attempt = 0
    last_problem = ""
    try:
        while not stop.is_set():
            try:
                client = aiomqtt.Client(**options)
            except (OSError, ValueError) as exc:  # paho loads TLS files here
                raise ConfigError(f"{cfg.source}: [mqtt] TLS files cannot be used: {exc}") from None
            session = _Session(cfg, controller, client, dirty, closing, metrics_interval, limiter, error_limiter, loaders,
                               retained_told)
            try:
                if not await _until_stopped(_connected(client, session, where), stop, closing) and session.connected:
                    log.warning("MQTT: stopped before offline could be published (the broker will publish the Will)")
                return
            except aiomqtt.MqttError as exc:
                if closing.is_set():
                    log.warning("MQTT: could not say offline on the way out (%s); the broker will publish the Will", exc)
                    return
                if session.connected:
                    log.warning("MQTT connection to %s lost (%s); reconnecting", where, exc)
                    attempt, last_problem = 0, ""
                    delay = backoff_delay(0, rng)
                else:
                    attempt += 1
                    delay, problem = _retry_plan(exc, attempt, rng, where, m.username)
                    if problem != last_problem:
                        (log.error if is_auth_error(exc) else log.warning)("%s", problem)
                        last_problem = problem
                    else:
                        log.debug("MQTT retry %d in %.2f s: %s", attempt, delay, exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
    finally:
        for t in list(loaders):
            t.cancel()
        await asyncio.gather(*loaders, return_exceptions=True)
        controller.remove_listener(on_state)
        unquiet()


def _retry_plan(exc: aiomqtt.MqttError, attempt: int, rng: random.Random, where: str, user: str) -> tuple[float, str]:
    """How long to wait before the next attempt, and the one line that explains why."""
    if is_auth_error(exc):
        return (AUTH_RETRY_S * (0.5 + 0.5 * rng.random()),
                f"MQTT broker {where} refused the credentials of user {user!r} ({exc}); "
                f"check [mqtt] username and {PASSWORD_ENV} or password_file. Retrying every ~{AUTH_RETRY_S:g} s")
    return (backoff_delay(attempt - 1, rng),
            f"MQTT broker {where} unavailable: {exc}; retrying with backoff (at most {RETRY_CAP_S:g} s)")


def _quiet_socket_race(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Silence one known aiomqtt 2.5 race, and only that one; returns the undo.

    aiomqtt schedules `loop.add_writer(fd)` with call_soon_threadsafe; when the broker drops the
    connection in between, the fd is closed by the time it runs and asyncio logs an EBADF
    traceback for a disconnect we already handle. Everything else goes to the previous handler.
    """
    previous = loop.get_exception_handler()

    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc, handle = context.get("exception"), repr(context.get("handle", ""))
        if isinstance(exc, OSError) and exc.errno == errno.EBADF and "add_writer" in handle:
            log.debug("MQTT: ignored write registration on a closed socket (connection already lost)")
            return
        if previous is not None:
            previous(lp, context)
        else:
            lp.default_exception_handler(context)

    loop.set_exception_handler(handler)

    def undo() -> None:
        if loop.get_exception_handler() is handler:
            loop.set_exception_handler(previous)

    return undo


async def _connected(client: aiomqtt.Client, session: _Session, where: str) -> None:
    async with client:
        session.connected = True
        log.info("MQTT connected to %s as %s, base topic %r", where, client.identifier, session.base)
        await session.run()


async def _until_stopped(work: Any, stop: asyncio.Event, closing: asyncio.Event) -> bool:
    """Run work until it ends or stop is set; then set closing and give it STOP_GRACE_S to say offline.

    The same happens when this task is cancelled (a daemon shutting down may cancel rather than
    wait), so a clean exit publishes offline either way. Keeps shutdown prompt even when stop
    arrives in the middle of a connect. Returns False when work had to be cancelled.
    """
    task = asyncio.create_task(work)
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        await _close(task, closing)
        raise
    finally:
        stopper.cancel()
    if not task.done():
        await _close(task, closing)
    if task.cancelled():
        return False
    task.result()
    return True


async def _close(task: asyncio.Task, closing: asyncio.Event) -> None:
    closing.set()
    try:
        await asyncio.wait({task}, timeout=STOP_GRACE_S)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task
