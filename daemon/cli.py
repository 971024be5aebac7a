"""`ripieno`: the daemon and its tools. Argument parsing only; each command lives in its own module."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from . import config as cfgmod
from . import ports

log = logging.getLogger("ripieno")


def _version() -> str:
    try:
        return version("ripieno")
    except PackageNotFoundError:
        return "unknown"


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _cmd_ports(args: argparse.Namespace) -> int:
    pl = ports.list_ports(args.api)
    if args.json:
        print(json.dumps({"api": pl.api, "inputs": pl.inputs, "outputs": pl.outputs}))
    else:
        print(f"api: {pl.api}")
        print("inputs (keyboards ripieno can listen to):")
        for p in pl.inputs or ["(none)"]:
            print(f"  {p}")
        print("outputs (synths ripieno can play):")
        for p in pl.outputs or ["(none)"]:
            print(f"  {p}")
    return 0


SYSTEM_CONFIG = Path("/etc/ripieno/config.toml")


def user_config(env: Mapping[str, str] | None = None) -> Path:
    """$XDG_CONFIG_HOME/ripieno/config.toml; ~/.config when it is unset or relative (the XDG spec ignores those)."""
    env = os.environ if env is None else env
    xdg = env.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else (Path(env["HOME"]) if env.get("HOME") else Path.home()) / ".config"
    return base / "ripieno" / "config.toml"


def config_search(user: bool = True, env: Mapping[str, str] | None = None) -> list[Path]:
    """Where a config is looked for without --config, first first. A system-wide service (which runs
    as its own user, not as whoever installs it) only looks in /etc."""
    return [user_config(env), SYSTEM_CONFIG] if user else [SYSTEM_CONFIG]


def find_config(explicit: str | None, user: bool = True, env: Mapping[str, str] | None = None) -> Path | None:
    """The config file to read: --config, else the first of `config_search` that exists, else None
    (built-in defaults). A file that exists but cannot be read is not skipped: loading it says why."""
    if explicit:
        return Path(explicit)
    return next((p for p in config_search(user, env) if p.exists()), None)


def read_config(explicit: str | None) -> cfgmod.Config:
    """The config of `ripieno run`, found in the documented order. Which file it was (or that there
    was none) is the config's `source`, which the service logs with the values once its checks
    passed ("config PATH: {...}"): logging it here would turn every one-line error after it into two."""
    path = find_config(explicit)
    if path is None:
        looked = " or ".join(map(str, config_search()))
        return dataclasses.replace(cfgmod.Config(), source=f"built-in defaults (no config file at {looked})")
    log.debug("config: reading %s", path)
    return cfgmod.load(path)


def load_config(args: argparse.Namespace) -> cfgmod.Config:
    cfg = read_config(args.config)
    cfg = cfgmod.override(cfg, "midi", api=args.api, input=args.input, output=args.output)
    return cfgmod.override(cfg, "engine", mode=args.mode, temperature=args.temperature, model=args.model)


def _stop_quietly(signum: int, _frame: object) -> None:
    """SIGTERM or Ctrl-C before any port is open: log it and end the process at once, exit 0.

    Not by raising SystemExit: a handler's exception surfaces wherever the main thread happens
    to be, and in the middle of an extension module's import (torch's, when the daemon still
    imported it) that is now and then C++ that cannot pass a
    Python exception on (pybind11 calls std::terminate: exit 134, "terminate called after
    throwing an instance of 'pybind11::error_already_set'") or code that catches it and carries
    on (the stop is lost and the daemon starts anyway): of 170 stops at random points of the
    import, one aborted and one was lost; the test that stops it there failed one run in three.
    Nothing is open yet that needs closing (serve() installs its own handlers before the first
    port), so nothing is unwound, which also saves the interpreter's teardown of half-imported
    modules. Then 150 of 150 such stops exited 0, within 0.35 s.
    """
    try:
        log.info("stopped while importing the engine (%s)", signal.Signals(signum).name)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    except BaseException:  # noqa: BLE001 - the process ends either way
        pass
    finally:
        os._exit(0)


def _cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    # Importing the engine and loading the model take a moment: a SIGTERM or Ctrl-C meanwhile is a
    # clean stop (exit 0, no port is open yet), not a kill. The service's own handlers take over once its loop runs.
    from .stop_signals import STOP_SIGNALS

    for sig in STOP_SIGNALS:
        signal.signal(sig, _stop_quietly)
    log.debug("importing the engine (SIGTERM or Ctrl-C stops cleanly from here on)")
    from . import service  # the engine (numpy, model): imported only by the commands that play

    return service.run(cfg, args.stats_file)


def _cmd_continue(args: argparse.Namespace) -> int:
    from . import continue_cmd

    cfg = cfgmod.load(args.config) if args.config else cfgmod.Config()
    cfg = cfgmod.override(cfg, "engine", mode=args.mode, temperature=args.temperature, model=args.model)
    if args.seconds is not None and not 0.1 <= args.seconds <= 3600:
        raise UsageError("--seconds must be between 0.1 and 3600")
    if args.events is not None and not 1 <= args.events <= 100_000:
        raise UsageError("--events must be between 1 and 100000")
    try:
        return continue_cmd.main(cfg, args.prompt, args.output, args.seconds, args.events, args.seed, args.png)
    except continue_cmd.ContinueError as exc:
        raise UsageError(str(exc)) from None


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "step":
        from ripieno.bench import step

        result = step.run(args.model)
    elif args.what == "soak" and args.live:
        from ripieno.bench import live_soak

        result = live_soak.run(args.model, minutes=args.minutes, server=args.jack_server, dense=args.dense)
    elif args.what == "soak":
        from ripieno.bench import soak

        result = soak.run(args.model, events=args.events)
    elif args.what == "mqtt":
        import asyncio

        from ripieno.bench import mqtt

        missing = mqtt.missing_tools()
        if missing:
            raise UsageError(f"bench mqtt needs {', '.join(missing)} (make install installs mosquitto and mosquitto-clients)")
        result = asyncio.run(mqtt.bench(args.flood, args.seconds))
    elif args.what == "startup":
        from ripieno.bench import startup

        result = startup.run(args.model, runs=args.runs, server=args.jack_server)
    else:
        from ripieno.bench import e2e

        result = e2e.run(args.model, notes=args.notes, period=args.period, server=args.jack_server)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
    return 0


def _cmd_service(args: argparse.Namespace) -> int:
    from . import systemd

    user = not args.system
    if args.action == "install":
        # The unit names the file the service will read, found as `ripieno run` finds it (a
        # system-wide unit: --config or /etc only), so what runs is what was checked here.
        config = find_config(args.config, user)
        if config is not None:
            cfgmod.load(config)  # refuse a broken config now, not at the first boot
        try:
            path = systemd.install(user, str(config) if config is not None else None)
        except PermissionError as exc:
            raise UsageError(str(exc)) from None
        scope = "--user " if user else ""
        if config is not None:
            uses = f"it runs with --config {config.resolve()}"
        else:
            uses = (f"no config file at {' or '.join(map(str, config_search(user)))}: it uses built-in defaults "
                    "until one exists there (read at each start; or install again with --config)")
        print(f"wrote {path}; {uses}; start it with: systemctl {scope}enable --now {systemd.UNIT_NAME}")
    else:
        path = systemd.uninstall(user)
        print(f"removed {path}" if path else "no ripieno unit installed")
    return 0


class UsageError(Exception):
    """Bad input on the command line (a file, a number): one line, exit 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ripieno", description="Real-time MIDI accompaniment daemon.")
    p.add_argument("--version", action="version", version=f"ripieno {_version()}")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sp = sub.add_parser("ports", help="list MIDI inputs and outputs")
    sp.add_argument("--api", default="auto", choices=["auto", "alsa", "jack"])
    sp.add_argument("--json", action="store_true", help="print one JSON object")
    sp.set_defaults(func=_cmd_ports)

    sr = sub.add_parser("run", help="run the daemon in the foreground")
    sr.add_argument("--config", help="config file (without it: $XDG_CONFIG_HOME/ripieno/config.toml, "
                    "~/.config/ripieno/config.toml when that is unset, then /etc/ripieno/config.toml, else built-in defaults)")
    sr.add_argument("--api", choices=["auto", "alsa", "jack"])
    sr.add_argument("--input", help="'virtual' or part of the keyboard's port name")
    sr.add_argument("--output", help="'virtual' or part of the synth's port name")
    sr.add_argument("--mode", choices=["call", "accompany", "off"])
    sr.add_argument("--temperature", type=float)
    sr.add_argument("--model", help="'default' or a checkpoint path")
    sr.add_argument("--stats-file", help="at exit, write the session's figures (lateness, input handling, counts) there as JSON")
    sr.set_defaults(func=_cmd_run)

    sc = sub.add_parser("continue", help="continue a MIDI file offline with the same engine")
    sc.add_argument("prompt", help="the prompt, a .mid file")
    sc.add_argument("-o", "--output", required=True, help="where to write prompt + continuation (.mid)")
    length = sc.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=float, help="length of the continuation (default: about the prompt's last phrase)")
    length.add_argument("--events", type=int, help="number of notes to continue with")
    sc.add_argument("--mode", choices=["call", "accompany"])
    sc.add_argument("--temperature", type=float)
    sc.add_argument("--seed", type=int, help="same seed, same file (default: the config's seed; 0 = fresh)")
    sc.add_argument("--model", help="'default' or a checkpoint path")
    sc.add_argument("--config", help="config file for the engine's limits (default: built-in defaults)")
    sc.add_argument("--png", help="also draw a piano roll of prompt and continuation")
    sc.set_defaults(func=_cmd_continue)

    sb = sub.add_parser("bench", help="measure the model step, the end-to-end latency or the start-up (JSON)")
    sb.add_argument("what", choices=["step", "e2e", "soak", "startup", "mqtt"])
    sb.add_argument("--model", default="default", help="'default' or a checkpoint path")
    sb.add_argument("--json", action="store_true", help="print one JSON object")
    sb.add_argument("--notes", type=int, default=200, help="e2e: measured reactions")
    sb.add_argument("--events", type=int, default=1_000_000, help="soak: events (player + ripieno) through one session")
    sb.add_argument("--live", action="store_true", help="soak: the real daemon through JACK ports, phrase after phrase (memory over --minutes)")
    sb.add_argument("--minutes", type=float, default=60.0, help="soak --live: how long to play")
    sb.add_argument("--dense", action="store_true", help="soak --live: accompany mode, no rests, 8 notes/s (reaches the online memory's bound in about 18 minutes)")
    sb.add_argument("--period", type=int, default=128, help="e2e: frames per period of the private jackd")
    sb.add_argument("--runs", type=int, default=5, help="startup: starts measured (the median is reported)")
    sb.add_argument("--flood", type=int, default=5000, help="mqtt: commands in the flood phase")
    sb.add_argument("--seconds", type=float, default=3.0, help="mqtt: seconds per phase")
    sb.add_argument("--jack-server", help="e2e, startup, soak --live: use this running JACK server instead of a private dummy one")
    sb.set_defaults(func=_cmd_bench)

    sv = sub.add_parser("service", help="install or remove the systemd unit")
    sv.add_argument("action", choices=["install", "uninstall"])
    scope = sv.add_mutually_exclusive_group()
    scope.add_argument("--user", action="store_true", help="a user unit (default; JACK/PipeWire live in the user session)")
    scope.add_argument("--system", action="store_true", help="a system-wide unit (needs root; runs in the audio group)")
    sv.add_argument("--config", help="config file the service runs with (without it: found as `ripieno run` finds it, "
                    "/etc/ripieno/config.toml only for --system; the unit names the file)")
    sv.set_defaults(func=_cmd_service)

    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        return int(args.func(args) or 0)
    except cfgmod.ConfigError as exc:
        print(f"ripieno: config error: {exc}", file=sys.stderr)
        return 2
    except ports.MidiSystemError as exc:
        print(f"ripieno: MIDI: {exc}", file=sys.stderr)
        return 3
    except UsageError as exc:
        print(f"ripieno: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        from ripieno.model.checkpoint import CheckpointError

        if isinstance(exc, CheckpointError):
            print(f"ripieno: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
