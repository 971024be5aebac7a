"""Which batching path the bench measured faster, remembered per device for `--batching auto`.

The answer depends on the hardware (oneDNN's fused padded kernel on CPU, cuDNN's native packed
sequences on CUDA), so it is measured, not guessed: `ripieno-train bench` stores its result in
the cache directory ($RIPIENO_CACHE or ~/.cache/ripieno) under a key naming the device.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from .corpus import default_cache_dir
from .data import Batching

log = logging.getLogger(__name__)

FILE = "batching.json"


def device_key(device: torch.device) -> str:
    """'cpu' or 'cuda:<device name>': the same GPU model shares a measurement."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def save_measurement(device: torch.device, result: dict[str, Any], cache_dir: Path | None = None) -> Path:
    """Remember a bench result (with its 'faster' batching) for this device."""
    path = (cache_dir or default_cache_dir()) / FILE
    data = _read(path)
    data[device_key(device)] = result
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)
    return path


def measured_batching(device: torch.device, cache_dir: Path | None = None) -> Batching | None:
    """The batching the bench measured faster on this device, or None if never measured."""
    entry = _read((cache_dir or default_cache_dir()) / FILE).get(device_key(device))
    faster = entry.get("faster") if isinstance(entry, dict) else None
    return faster if faster in ("packed", "padded") else None
