"""`ripieno-train convert OLD.pt NEW.safetensors`: a format-1 (torch) checkpoint into format 2.

Format 1 was `torch.save` of {"format", "header" (JSON), "weights", "tables"}, read with the
weights-only unpickler (tensors and plain containers only) and checked against its own checksum
before anything is written; the new file carries the same config, meta, weights and tables.
Only this command reads the old format, and it needs torch; the daemon never does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from ripieno.model import checkpoint
from ripieno.model.checkpoint import CheckpointError
from ripieno.model.config import ModelConfig

log = logging.getLogger(__name__)

OLD_FORMAT_VERSION = 1


def _old_sha256(state: dict[str, torch.Tensor]) -> str:
    """Format 1's checksum: sorted names, torch dtype, shape and bytes (the header was not covered)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def convert(old: Path, new: Path) -> Path:
    """Read a format-1 checkpoint (verified) and write it as format 2; every problem is one CheckpointError line."""
    where = f"checkpoint {old}"
    if not old.is_file():
        raise CheckpointError(f"{where}: no such file")
    try:
        blob = torch.load(old, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for truncated/corrupt/unsafe files
        raise CheckpointError(f"{where}: not a readable format-1 checkpoint ({' '.join(str(e).split())[:120]})") from None
    if not isinstance(blob, dict) or blob.get("format") != checkpoint.FORMAT or not isinstance(blob.get("header"), str):
        raise CheckpointError(f"{where}: not a ripieno format-1 checkpoint")
    try:
        header = json.loads(blob["header"])
    except ValueError:
        raise CheckpointError(f"{where}: header is not valid JSON") from None
    if not isinstance(header, dict) or header.get("format_version") != OLD_FORMAT_VERSION:
        raise CheckpointError(f"{where}: format {header.get('format_version') if isinstance(header, dict) else '?'!r}, not format 1")
    state, tables = blob.get("weights"), blob.get("tables", {})
    if not isinstance(state, dict) or not isinstance(tables, dict) or not all(isinstance(v, torch.Tensor) for v in [*state.values(), *tables.values()]):
        raise CheckpointError(f"{where}: weights or tables are not tensors")
    if _old_sha256({**state, **{f"tables/{k}": v for k, v in tables.items()}}) != header.get("sha256"):
        raise CheckpointError(f"{where}: weights checksum mismatch (file damaged or edited)")
    try:
        config = ModelConfig.from_dict(header["config"])
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{where}: bad model config ({e})") from None
    weights = {k: v.to(torch.float32).numpy() for k, v in state.items()}
    meta = header.get("meta") if isinstance(header.get("meta"), dict) else {}
    return checkpoint.save(new, config, weights, meta, {k: np.ascontiguousarray(v.numpy()) for k, v in tables.items()})


def add_command(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("convert", help="convert a format-1 (.pt) checkpoint to the safetensors format", description="Convert a format-1 torch checkpoint to format 2 (safetensors).")
    c.add_argument("old", type=Path, help="the format-1 .pt checkpoint")
    c.add_argument("new", type=Path, help="where the .safetensors checkpoint goes")
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        out = convert(args.old, args.new)
        checkpoint.load(out)  # what was written reads back
    except (CheckpointError, OSError) as e:
        log.error("%s", e)
        return 2
    print(json.dumps({"checkpoint": str(out), "bytes": out.stat().st_size}))  # noqa: T201 - CLI result
    return 0
