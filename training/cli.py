"""`ripieno-train`: fit, eval and bench. Argument parsing only."""

from __future__ import annotations

import argparse
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ripieno-train", description="Train and evaluate ripieno models.")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
