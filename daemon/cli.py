"""`ripieno`: the daemon and its tools. Argument parsing only; each command lives in its own module."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from importlib.metadata import PackageNotFoundError, version

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


def load_config(args: argparse.Namespace) -> cfgmod.Config:
    cfg = cfgmod.load(args.config) if args.config else cfgmod.Config()
    cfg = cfgmod.override(cfg, "midi", api=args.api, input=args.input, output=args.output)
    return cfgmod.override(cfg, "engine", mode=args.mode, temperature=args.temperature, model=args.model)


def _stop_quietly(signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    # Importing torch takes seconds: a SIGTERM or Ctrl-C meanwhile is a clean stop (exit 0, no port
    # is open yet), not a kill. The service's own handlers take over once its loop runs.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop_quietly)
    log.debug("importing the engine (SIGTERM or Ctrl-C stops cleanly from here on)")
    from . import service  # torch is heavy: import it only for commands that need it

    return service.run(cfg)


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
        from . import bench_step

        result = bench_step.run(args.model)
    elif args.what == "soak":
        from . import bench_soak

        result = bench_soak.run(args.model, events=args.events)
    else:
        from . import bench_e2e

        result = bench_e2e.run(args.model, notes=args.notes, period=args.period, server=args.jack_server)
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
        if args.config:
            cfgmod.load(args.config)  # refuse a broken config now, not at the first boot
        try:
            path = systemd.install(user, args.config)
        except PermissionError as exc:
            raise UsageError(str(exc)) from None
        scope = "--user " if user else ""
        print(f"wrote {path}; start it with: systemctl {scope}enable --now {systemd.UNIT_NAME}")
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
    sr.add_argument("--config", help="config file (default: built-in defaults)")
    sr.add_argument("--api", choices=["auto", "alsa", "jack"])
    sr.add_argument("--input", help="'virtual' or part of the keyboard's port name")
    sr.add_argument("--output", help="'virtual' or part of the synth's port name")
    sr.add_argument("--mode", choices=["call", "accompany", "off"])
    sr.add_argument("--temperature", type=float)
    sr.add_argument("--model", help="'default' or a checkpoint path")
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

    sb = sub.add_parser("bench", help="measure the model step or the end-to-end latency (JSON)")
    sb.add_argument("what", choices=["step", "e2e", "soak"])
    sb.add_argument("--model", default="default", help="'default' or a checkpoint path")
    sb.add_argument("--json", action="store_true", help="print one JSON object")
    sb.add_argument("--notes", type=int, default=200, help="e2e: measured reactions")
    sb.add_argument("--events", type=int, default=1_000_000, help="soak: events (player + ripieno) through one session")
    sb.add_argument("--period", type=int, default=128, help="e2e: frames per period of the private jackd")
    sb.add_argument("--jack-server", help="e2e: use this running JACK server instead of a private dummy one")
    sb.set_defaults(func=_cmd_bench)

    sv = sub.add_parser("service", help="install or remove the systemd unit")
    sv.add_argument("action", choices=["install", "uninstall"])
    scope = sv.add_mutually_exclusive_group()
    scope.add_argument("--user", action="store_true", help="a user unit (default; JACK/PipeWire live in the user session)")
    scope.add_argument("--system", action="store_true", help="a system-wide unit (needs root; runs in the audio group)")
    sv.add_argument("--config", help="config file the service runs with")
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
