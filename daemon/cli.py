"""`ripieno`: the daemon and its tools. Argument parsing only; each command lives in its own module."""

from __future__ import annotations

import argparse
import json
import logging
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


def _cmd_run(args: argparse.Namespace) -> int:
    from . import service  # torch is heavy: import it only for commands that need it

    return service.run(load_config(args))


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
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
