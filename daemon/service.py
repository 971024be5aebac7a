"""The daemon's async shell: ports -> listener -> engine -> scheduler -> port, plus commands and MQTT.

Everything runs on one event loop. rtmidi's thread only queues messages (midi_ports), the
engine does one model step per callback, the scheduler's timer sends what is due. The shell
guarantees the one promise a musician cares most about: whatever ends the session (SIGTERM,
SIGINT, a lost synth, a mode change, an exception anywhere), ripieno's notes are switched off.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import logging
import sys
import threading
import time
from collections import deque
from typing import Any

import numpy as np

from ripieno.model.play.keys import Control, KeyDown
from ripieno.model.play.performance import Performance

from . import jack_server, midi_ports, ports, systemd, tempo_source
from .clock import CLOCK_STATUS, MidiClock
from .commands import COMMAND_BURST, COMMAND_RATE, CommandError, Controller, RateLimiter, State, cc_command
from .config import Config, ConfigError, as_dict
from .listener import Listener
from .output import LATENESS_RING, RealtimeHost
from .stop_signals import STOP_SIGNALS

log = logging.getLogger(__name__)

JACK_FLUSH_S = 0.05  # JACK sends from a ring buffer at the next cycle: give the last note-offs time to leave
WATCH_S = 0.5  # hot-plug: port names are polled this often
JACK_PROBE_S = 1.0  # the JACK server is asked whether it is still there this often (jack_server)
JACK_SETTLE_S = 0.5  # after it is back, this long before ripieno opens its ports again
MQTT_GOODBYE_S = 1.0  # at stop, MQTT gets this long to publish "offline" before it is cancelled
TEMPO_POLL_S = 0.25  # the tempo source's tempo and confidence are read this often (for state)


def make_rng(seed: int) -> np.random.Generator:
    """seed 0 = a fresh seed each run (logged, so a good take can be replayed)."""
    if seed == 0:
        seed = int(np.random.SeedSequence().entropy % (2**63 - 1)) or 1
    log.info("seed %d", seed)
    return np.random.default_rng(seed)


def load_stream(spec: str) -> Any:
    """Checkpoint -> a fresh Stream; blocking (run it off the loop)."""
    from ripieno.model import checkpoint
    from ripieno.model.stream import Stream

    return Stream(checkpoint.load(spec))


def load_off_loop(loop: asyncio.AbstractEventLoop, spec: str) -> asyncio.Future:
    """Load a model in a daemon thread. Not the loop's default executor: asyncio.run joins its
    threads at exit, so a SIGTERM during a slow load would wait for the load (the 2 s promise)."""
    fut: asyncio.Future = loop.create_future()

    def settle(result: Any, exc: BaseException | None) -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)

    def work() -> None:
        try:
            result, exc = load_stream(spec), None
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting task as is
            result, exc = None, e
        try:
            loop.call_soon_threadsafe(settle, result, exc)
        except RuntimeError:  # the loop is gone: ripieno stopped while this was loading
            pass

    threading.Thread(target=work, name="model-load", daemon=True).start()
    return fut


def percentiles(samples: Any) -> dict[str, float | None]:
    s = sorted(samples)
    if not s:
        return {"p50": None, "p99": None, "max": None, "n": 0}
    return {"p50": round(s[len(s) // 2], 1), "p99": round(s[min(len(s) - 1, int(0.99 * len(s)))], 1), "max": round(s[-1], 1), "n": len(s)}


class Session:
    """One running daemon: owns ports, engine and controller; is the controller's `Actions`."""

    def __init__(self, cfg: Config, api: str, loop: asyncio.AbstractEventLoop, stream: Any) -> None:
        self.cfg = cfg
        self.api = api
        self.loop = loop
        self.stop = asyncio.Event()
        self.failure: BaseException | None = None
        self.listener = Listener()
        self.tempo = tempo_source.make_tempo(cfg)
        # MIDI clock bytes go to the clock (and are asked of rtmidi) only when it is the source
        self.clock = self.tempo if isinstance(self.tempo, MidiClock) else None
        # A named keyboard or synth that is not switched on yet is waited for (connected when it
        # appears, like a replug): ripieno still comes up, and tells systemd it is ready.
        self.midi_in, self.midi_out = midi_ports.open_pair(api, cfg.midi.input, cfg.midi.output, loop, clock=self.clock is not None,
                                                           wait=True)
        self.healthy = True  # False while the JACK server is gone: then systemd's watchdog is not fed
        self.stats_file: str | None = None  # the exit figures as JSON, for benchmarks (`run --stats-file`)
        self.controller = Controller(cfg, self)
        # The same Performance (engine + scheduler) that `continue` and eval drive on a virtual
        # clock; one model step per loop callback: a due note's timer then waits for at most one step.
        self.perf = Performance(cfg.engine, stream, make_rng(cfg.engine.seed), channel=cfg.midi.channel - 1,
                                stats=self.controller.stats, tempo=self.tempo, plans_per_wake=1, keep=False)
        self.engine = self.perf.engine
        self.output = RealtimeHost(self.perf, self._send, loop)
        self._in_dropped = 0
        # Keyboard controllers mapped to commands: the same rate as MQTT commands; the latest value
        # of each waits for the next token (a knob turned fast lands where it stopped), a value
        # that changes nothing is not applied at all (a mode pedal rocked 5,000 times is no burst).
        self._cc_limiter = RateLimiter(COMMAND_RATE, COMMAND_BURST)
        self._cc_pending: dict[str, bytes] = {}
        self._cc_timer: asyncio.TimerHandle | None = None
        self._silenced = False
        # keyboard note-on -> handled (queue wait + listener + engine, cut included), as measured
        self.input_us: deque[float] = deque(maxlen=LATENESS_RING)

    # ------------------------------------------------------------------------- Actions (commands)

    def on_state(self, state: State) -> None:
        self.engine.set_state(state.mode, enabled=state.enabled, temperature=state.temperature, silence_s=state.silence_s,
                              variation=state.variation, accompany=state.accompany)
        self._arm()

    def reset(self) -> None:
        self.engine.reset()
        self._arm()

    def panic(self) -> None:
        self.engine.panic()
        self._arm()

    async def load_model(self, spec: str) -> None:
        stream = await load_off_loop(self.loop, spec)
        self.engine.swap_stream(stream)
        gc.freeze()
        self._arm()

    # ------------------------------------------------------------------------------ input, timing

    async def consume(self) -> None:
        """Input queue -> listener -> engine; mapped controllers become commands."""
        q = self.midi_in.queue
        stats = self.controller.stats
        clock = self.clock
        while True:
            t, msg = await q.get()
            if clock is not None and msg and msg[0] in CLOCK_STATUS:
                clock.message(msg, t)  # stamped at rtmidi's callback, like every input
                continue
            for ev in self.listener.feed(t, msg):
                if isinstance(ev, Control):
                    cmd = cc_command(self.cfg.midi.cc, ev.number, ev.value)
                    if cmd is not None:
                        self._cc_pending[cmd[0]] = cmd[1]
                        self._cc_drain()
                        continue
                self.output.feed(ev)
                if isinstance(ev, KeyDown):
                    self.input_us.append((time.monotonic() - t) * 1e6)
            if self.midi_in.dropped != self._in_dropped:
                stats.dropped += self.midi_in.dropped - self._in_dropped
                self._in_dropped = self.midi_in.dropped
                for release in self.midi_in.take_lost_releases():
                    for ev in self.listener.feed(t, release):
                        self.output.feed(ev)
            self.output.advance()
            self._arm()
            # A full queue (a chord, a smash) would otherwise be stepped through without the loop
            # ever running a due note's timer in between: yield after every message.
            await asyncio.sleep(0)

    async def watch_tempo(self, interval: float = TEMPO_POLL_S) -> None:
        """Tell the command layer (so {base}/state) where the beat stands; it publishes only real moves."""
        following = False
        lost = 0
        while True:
            tempo, now = self.tempo, time.monotonic()
            if self.clock is not None and self.clock.lost_ticks != lost:
                lost = self.clock.lost_ticks
                log.debug("tempo: %d MIDI clock ticks lost on the way so far (counted in)", lost)
            bpm = tempo.tempo_bpm if tempo is not None else None
            confidence = tempo.confidence if tempo is not None else 0.0
            self.controller.report_tempo(bpm, confidence, now)
            if (confidence >= 0.5) != following and self.cfg.tempo.source != "player":
                following = not following
                if following:
                    log.info("tempo: following %s at %.1f bpm", self.cfg.tempo.source, bpm or 0.0)
                else:
                    log.info("tempo: %s lost (confidence %.2f)", self.cfg.tempo.source, confidence)
            await asyncio.sleep(interval)

    def _cc_drain(self) -> None:
        """Apply the pending controller commands the rate allows; the rest wait for a token."""
        now = time.monotonic()
        while self._cc_pending:
            name, payload = next(iter(self._cc_pending.items()))
            if self._cc_unchanged(name, payload):
                del self._cc_pending[name]
                continue
            if not self._cc_limiter.allow(now):
                break
            del self._cc_pending[name]
            try:  # controllers map to settings only (cc_command), which apply at once: no task
                self.controller.apply_now(name, payload)
            except CommandError as exc:
                log.warning("MIDI CC command %s refused: %s", name, exc.reason)
        if self._cc_pending and self._cc_timer is None:
            self._cc_timer = self.loop.call_later(1.0 / COMMAND_RATE, self._cc_tick)

    def _cc_tick(self) -> None:
        self._cc_timer = None
        self._cc_drain()

    def _cc_unchanged(self, name: str, payload: bytes) -> bool:
        """True when the command would set a setting to the value it already has."""
        try:
            value = self.controller.validate(name, payload)
        except CommandError:
            return False  # refused later, with its reason in the log
        return hasattr(self.controller.state, name) and getattr(self.controller.state, name) == value

    def _arm(self) -> None:
        """Re-arm the performance's one timer (after anything that may have changed its deadline)."""
        self.output.arm()

    def _send(self, msg: list[int]) -> None:
        self.midi_out.send(msg)  # the port of the moment (reopened after a JACK server restart)

    # ---------------------------------------------------------------------------------- hot-plug

    def on_port_change(self, port: midi_ports._Port, change: midi_ports.Change) -> None:
        now = time.monotonic()
        how = "connected" if port.connections == 1 else "back"  # 1: it was not there at start
        if port is self.midi_in:
            if change is midi_ports.Change.LOST:
                self.engine.input_lost(self.listener.release_all(now))
            else:
                log.info("keyboard %s: %s", how, port.peer)
        else:
            self.engine.output_lost() if change is midi_ports.Change.LOST else self.engine.panic()
            if change is midi_ports.Change.FOUND:
                log.info("synth %s: %s", how, port.peer)
        self.controller.set_ports(**{"input" if port is self.midi_in else "output": port.peer or ""})
        self._arm()

    # ---------------------------------------------------------------------------- JACK restarts

    async def watch_jack_server(self) -> None:
        """Notice a JACK server that went away (killed, restarted by the user, QjackCtl), say so,
        and open ripieno's ports again once a server is back (`jack_server`). Meanwhile ripieno is
        not healthy: the systemd watchdog is not fed, so a service that stays without a server
        longer than WatchdogSec is restarted (and a start without a server is retried)."""
        path = jack_server.request_socket()
        server = jack_server.identity(path)
        if self.api != "jack" or server is None:
            await asyncio.Event().wait()  # not jackd (ALSA, PipeWire's JACK): nothing to watch; run until cancelled
        while True:
            await asyncio.sleep(JACK_PROBE_S)
            if jack_server.identity(path) == server and jack_server.alive(path):
                continue
            await self._jack_gone(path)
            server = jack_server.identity(path)

    async def _jack_gone(self, path: Any) -> None:
        log.error("the JACK server is gone: ripieno cannot hear or play; its ports come back when a server does")
        self.healthy = False
        now = time.monotonic()
        self.engine.input_lost(self.listener.release_all(now))
        self.engine.output_lost()
        old_in, old_out = self.midi_in, self.midi_out
        self.controller.set_ports(input="", output="")
        # closing a client of a dead server blocks about a second inside libjack: not on the loop
        await asyncio.to_thread(_close_all, old_in, old_out)
        while True:
            await asyncio.sleep(JACK_PROBE_S / 2)
            if not jack_server.alive(path):
                continue
            await asyncio.sleep(JACK_SETTLE_S)  # a server that just started accepts clients a moment later
            try:
                self.midi_in, self.midi_out = midi_ports.open_pair(
                    self.api, self.cfg.midi.input, self.cfg.midi.output, self.loop, clock=self.clock is not None,
                    wait=True, queue=old_in.queue)
            except ports.MidiSystemError as exc:
                log.warning("a JACK server is back but ripieno's ports do not open yet (%s); trying again", exc)
                continue
            break
        self.engine.panic()  # a synth that lived through it may still hold a note
        self.controller.set_ports(input=self.midi_in.peer or "", output=self.midi_out.peer or "")
        self.healthy = True
        log.info("the JACK server is back: ports open again (input %s, output %s)", _shown(self.midi_in), _shown(self.midi_out))
        self._arm()

    async def _watchdog(self, interval: float) -> None:
        while True:
            if self.healthy:
                systemd.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    # ------------------------------------------------------------------------------- lifecycle

    def on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """An exception in any callback: log it, silence ripieno, stop with a failure status."""
        exc = context.get("exception")
        log.error("unexpected error: %s", context.get("message"), exc_info=exc)
        self.failure = exc or RuntimeError(str(context.get("message")))
        self.stop.set()

    async def run(self) -> int:
        tasks = [self.loop.create_task(self.consume(), name="input"),
                 self.loop.create_task(midi_ports.watch(lambda: [self.midi_in, self.midi_out], self.on_port_change, WATCH_S), name="ports"),
                 self.loop.create_task(self.watch_jack_server(), name="jack-server"),
                 self.loop.create_task(self.watch_tempo(), name="tempo")]
        if self.cfg.mqtt.enabled:
            from .mqtt import run_mqtt

            tasks.append(self.loop.create_task(run_mqtt(self.cfg, self.controller, self.stop), name="mqtt"))
        interval = systemd.watchdog_interval()
        if interval:
            tasks.append(self.loop.create_task(self._watchdog(interval), name="watchdog"))
        self.loop.set_exception_handler(self.on_loop_error)
        self.controller.set_ports(input=self.midi_in.peer or "", output=self.midi_out.peer or "")
        # A previous ripieno killed by SIGKILL (the OOM killer, a watchdog) could not close its notes:
        # the synth may still sound one. Before anything else: sustain off, all notes off, all sound
        # off on our channel (a replugged synth gets the same, in on_port_change).
        self.engine.panic()
        systemd.notify("READY=1")
        log.info("ripieno is up (mode %s, input %s, output %s)", self.engine.mode, _shown(self.midi_in), _shown(self.midi_out))
        stopper = self.loop.create_task(self.stop.wait())
        try:
            done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stopper and not t.cancelled() and t.exception() is not None:
                    self.failure = t.exception()
                    if not isinstance(self.failure, ConfigError):
                        log.error("task %s failed: %s", t.get_name(), self.failure, exc_info=self.failure)
        finally:
            systemd.notify("STOPPING=1")
            log.info("stopping")
            self.silence()
            self.stop.set()
            mqtt = [t for t in tasks if t.get_name() == "mqtt" and not t.done()]
            if mqtt:  # let it publish "offline" (bounded: the 2 s exit promise)
                await asyncio.wait(mqtt, timeout=MQTT_GOODBYE_S)
            for t in [stopper, *tasks]:
                t.cancel()
            await asyncio.gather(stopper, *tasks, return_exceptions=True)
        if isinstance(self.failure, ConfigError):  # e.g. an unreadable MQTT password file: exit 2, one line
            raise self.failure
        return 1 if self.failure is not None else 0

    def silence(self) -> None:
        """Panic once at the end (note-offs for all that sounds, then CC64/123/120); no more wake-ups."""
        self.output.close()
        if not self._silenced:
            self._silenced = True
            self.engine.panic()

    async def close(self) -> None:
        """Silence ripieno, let the last bytes leave, close the ports."""
        if self._cc_timer is not None:
            self._cc_timer.cancel()
        try:
            self.silence()
        finally:
            self.output.close()
            if self.api == "jack":
                await asyncio.sleep(JACK_FLUSH_S)
            self.midi_in.close()
            self.midi_out.close()
            close_tempo = getattr(self.tempo, "close", None)
            if close_tempo is not None:  # Link leaves its session
                close_tempo()
        stats = self.exit_stats()
        log.info("stats %s", json.dumps(stats))
        if self.stats_file is not None:
            write_stats(self.stats_file, stats)

    def exit_stats(self) -> dict[str, Any]:
        """The session's figures at exit: the command layer's metrics, output lateness, input handling."""
        return self.controller.stats.metrics() | {
            "lateness_us": percentiles(self.output.lateness_us),
            "input_us": percentiles(self.input_us),
            "input_dropped": self.midi_in.dropped,
        }


def write_stats(path: str, stats: dict[str, Any]) -> None:
    """The exit figures as one JSON file, written whole (temp file, then rename): what a benchmark
    reads, instead of scraping a log line. A path that cannot be written is a warning, not a failure."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(stats, f)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("could not write the stats file %s: %s", path, exc.strerror or exc)


def _shown(port: midi_ports._Port) -> str:
    return port.peer or f"waiting for {port.wanted!r}"




async def serve(cfg: Config, stats_file: str | None = None) -> int:
    tempo_source.check(cfg)  # [tempo] source = "link" without aalink: exit 2, one line, before anything opens
    if cfg.mqtt.enabled:
        from .mqtt import client_options

        client_options(cfg)  # an unreadable password/CA/key file: exit 2 before any port opens
    api = ports.resolve_api(cfg.midi.api)
    log.info("config %s: %s", cfg.source, as_dict(cfg) | {"mqtt": "..."})
    log.info("MIDI api: %s", api)
    loop = asyncio.get_running_loop()
    stop_early = asyncio.Event()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop_early.set)
    load = load_off_loop(loop, cfg.engine.model)
    waiter = loop.create_task(stop_early.wait())
    await asyncio.wait([load, waiter], return_when=asyncio.FIRST_COMPLETED)
    if stop_early.is_set():
        log.info("stopped while loading the model")
        load.cancel()
        return 0
    waiter.cancel()
    stream = load.result()
    # numpy, the model and the online tables leave many long-lived objects; a full collection over them was
    # measured at 89 ms, a stall no musician should hear. Frozen, the collector never scans them.
    gc.freeze()
    session = Session(cfg, api, loop, stream)
    session.stats_file = stats_file
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, session.stop.set)
    try:
        status = await session.run()
    finally:
        await session.close()
    return status


def _close_all(*ports_: Any) -> None:
    for p in ports_:
        try:
            p.close()
        except Exception:  # noqa: BLE001 - a client of a dead server may fail to close; it is gone either way
            log.debug("closing %s after the JACK server left", p.label, exc_info=True)


def single_thread() -> None:
    """One model step is ~100 us of numpy: BLAS threads only add wake-up jitter on a small box.
    (The daemon never imports torch: weights are read with safetensors and stepped in numpy.)"""
    from ripieno.model.blas import limit_blas_threads

    limit_blas_threads(1)


# rtmidi runs our input callback inside JACK's process thread, which must take the GIL first; at
# Python's default 5 ms switch interval that wait can outlast a whole period (2.7 ms at 128 frames).
GIL_SWITCH_S = 0.0005


def run(cfg: Config, stats_file: str | None = None) -> int:
    """Serve until stopped; `stats_file`: where the exit figures go as JSON (`ripieno run --stats-file`)."""
    single_thread()
    sys.setswitchinterval(GIL_SWITCH_S)
    return asyncio.run(serve(cfg, stats_file))

