"""Safe checkpoints: one file, tensors plus a JSON header, never an arbitrary pickle.

Format (FORMAT_VERSION 1): `torch.save` of a plain dict
    {"format": "ripieno-checkpoint", "header": <JSON string>, "weights": {name: tensor},
     "tables": {name: tensor}}   # optional: e.g. the corpus n-gram the online blend uses
read back with `torch.load(weights_only=True)`, which refuses anything but tensors and plain
containers. The header holds the format version, the ModelConfig (with its Encoding and
encoding version), free-form metadata (training run, metrics) and the SHA-256 of the weights
(over sorted names, dtypes, shapes and bytes; tables count as "tables/<name>"), so a flipped byte is caught at load time,
not as garbage notes later. Every problem is one CheckpointError line naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from .encoding import ENCODING_VERSION, Encoding
from .network import ModelConfig, NoteLSTM

FORMAT = "ripieno-checkpoint"
FORMAT_VERSION = 1
DEFAULT = "default"


class CheckpointError(Exception):
    """A checkpoint that cannot be used; str() is one line naming the file and the problem."""


REASON_CHARS = 200  # a reason from torch longer than this is cut at its last sentence end before it
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_SENTENCE_END = re.compile(r"[.!?;](?=\s|$)")
_UNPICKLER = "WeightsUnpickler error:"


def _reason(exc: BaseException) -> str:
    """What torch said, as a few whole words for one line: its first line (with the line after a
    heading that ends in ':'), cut at a sentence end, never mid-word. For a refusal of the
    weights-only loader, only what it refused: its advice to load the file unsafely (or to
    allowlist the class) is not something ripieno does."""
    text = _ANSI.sub("", str(exc))
    prefix = ""
    if _UNPICKLER in text:
        text = text.split(_UNPICKLER, 1)[1]
        prefix = "refused by the weights-only loader: "
    lines = [" ".join(line.split()) for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return prefix + type(exc).__name__
    line = lines[0]
    if line.endswith(":") and len(lines) > 1:
        line = f"{line} {lines[1]}"
    if len(line) > REASON_CHARS:
        ends = [m.end() for m in _SENTENCE_END.finditer(line) if m.end() <= REASON_CHARS]
        if ends:
            line = line[: ends[-1]]
        else:
            cut = line.rfind(" ", 0, REASON_CHARS)
            line = (line[:cut] if cut > 0 else line[:REASON_CHARS]) + " ..."
    return prefix + line


@dataclass
class Checkpoint:
    model: NoteLSTM  # eval mode
    config: ModelConfig
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    tables: dict[str, torch.Tensor] = field(default_factory=dict)  # non-weight arrays (corpus n-gram)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)  # objects built once from tables

    @property
    def encoding(self) -> Encoding:
        return self.config.encoding


def default_path() -> Path:
    """Where the bundled model lives inside the installed package."""
    return Path(str(resources.files("ripieno.model.weights") / "default.pt"))


def weights_sha256(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _checked(state: dict[str, torch.Tensor], tables: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the checksum covers: the weights, and the tables under "tables/" (absent tables change nothing)."""
    return {**state, **{f"tables/{k}": v for k, v in tables.items()}}


def save(path: str | os.PathLike, model: NoteLSTM, meta: dict[str, Any] | None = None, tables: dict[str, torch.Tensor] | None = None) -> Path:
    """Write model + meta (+ tables) atomically (temp file then rename), so a crash never leaves half a checkpoint."""
    path = Path(path)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    tables = {k: v.detach().cpu().contiguous() for k, v in (tables or {}).items()}
    header = {
        "format_version": FORMAT_VERSION,
        "encoding_version": model.config.encoding.version,
        "config": model.config.to_dict(),
        "meta": meta or {},
        "sha256": weights_sha256(_checked(state, tables)),
    }
    try:
        text = json.dumps(header, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: meta is not plain JSON ({e})") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    blob = {"format": FORMAT, "header": text, "weights": state}
    if tables:
        blob["tables"] = tables
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return path


def load(spec: str | os.PathLike = DEFAULT, device: str | torch.device = "cpu") -> Checkpoint:
    """Load "default" (the bundled model) or a checkpoint path; the model comes back in eval mode."""
    if str(spec) == DEFAULT:
        path = default_path()
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path}: no bundled default model in this install yet; pass a checkpoint path")
    else:
        path = Path(spec).expanduser()
    where = f"checkpoint {path}"
    if not path.exists():
        raise CheckpointError(f"{where}: no such file")
    if not path.is_file():
        raise CheckpointError(f"{where}: not a file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated/corrupt/unsafe files
        raise CheckpointError(f"{where}: unreadable (truncated, corrupt or not a tensor file): {_reason(e)}") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT or not isinstance(blob.get("header"), str):
        raise CheckpointError(f"{where}: not a ripieno checkpoint")
    try:
        header = json.loads(blob["header"])
        version = header["format_version"]
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{where}: header is not valid ripieno JSON") from None
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{where}: checkpoint format {version}, this ripieno reads format {FORMAT_VERSION}")
    enc_version = header.get("encoding_version", header.get("config", {}).get("encoding", {}).get("version"))
    if enc_version == 1:
        raise CheckpointError(f"{where}: encoding 1 (time in seconds) is not read by this ripieno (encoding 2, time in beats): retrain it with `ripieno-train fit` on the same data")
    if enc_version != ENCODING_VERSION:
        raise CheckpointError(f"{where}: encoding version {enc_version}, this ripieno uses encoding {ENCODING_VERSION}; retrain or use a matching ripieno")
    state = blob.get("weights")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{where}: weights are missing or not tensors")
    tables = blob.get("tables", {})
    if not isinstance(tables, dict) or not all(isinstance(v, torch.Tensor) for v in tables.values()):
        raise CheckpointError(f"{where}: tables are not tensors")
    if weights_sha256(_checked(state, tables)) != header.get("sha256"):
        raise CheckpointError(f"{where}: weights checksum mismatch (file damaged or edited)")
    try:
        config = ModelConfig.from_dict(header["config"])
    except Exception as e:
        raise CheckpointError(f"{where}: bad model config ({_reason(e)})") from None
    try:
        model = NoteLSTM(config)
    except Exception as e:  # noqa: BLE001 - a header's numbers of the wrong type or sign reach torch here
        raise CheckpointError(f"{where}: bad model config ({_reason(e)})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{where}: weights do not fit the config ({_reason(e)})") from None
    model.to(device).eval()
    meta = header.get("meta") if isinstance(header.get("meta"), dict) else {}
    return Checkpoint(model=model, config=config, meta=meta, path=path, tables=tables)
