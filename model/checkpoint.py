"""Safe checkpoints: one safetensors file, tensors plus a JSON header; never a pickle, never torch.

Format (FORMAT_VERSION 2): a safetensors file (the field's standard container: an 8-byte
header length, a JSON table of names, dtypes, shapes and offsets, then raw little-endian bytes;
nothing in it can run code) whose metadata holds
    "format": "ripieno-checkpoint", "header": <JSON string>, "sha256": <hex>
and whose tensors are the network's weights under "weights/<state_dict name>" and optional
arrays under "tables/<name>" (e.g. the corpus n-gram the online blend uses). The header holds
the format version, the ModelConfig (with its Encoding and encoding version) and free-form
metadata (training run, metrics). The checksum covers the header text and every tensor (name,
dtype, shape, bytes), so a flipped byte or an edited header value is caught at load time, not
heard as garbage notes later.

Loading checks before it allocates: the safetensors table of contents and the header are read
first, the config is validated against its bounds (`ModelConfig`), and every weight's shape
must be the one that config implies (`config.expected_shapes`) before any tensor is read.
Every problem is one CheckpointError line naming the file. Format 1 (a `torch.save` zip, .pt)
is recognised and refused with the command that converts it (`ripieno-train convert`).

This module needs numpy and safetensors only: the daemon loads and steps a model without
torch (`numpy_lstm.NumpyLSTM`); `network.model_of` gives training its torch module.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .config import ModelConfig, expected_shapes
from .encoding import ENCODING_VERSION, Encoding

FORMAT = "ripieno-checkpoint"
FORMAT_VERSION = 2
SUFFIX = ".safetensors"
DEFAULT = "default"
MAX_HEADER_BYTES = 1 << 20  # safetensors' table of contents + our JSON header: the bundled one is ~9 KB
MAX_TABLE_ELEMENTS = 64_000_000  # every "tables/" array together (the bundled corpus n-gram is ~0.4 M)
WEIGHTS, TABLES = "weights/", "tables/"


class CheckpointError(Exception):
    """A checkpoint that cannot be used; str() is one line naming the file and the problem."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: the config and its weights as read-only numpy arrays (state_dict names)."""

    config: ModelConfig
    weights: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    tables: dict[str, np.ndarray] = field(default_factory=dict)  # non-weight arrays (corpus n-gram)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)  # objects built once from it (numpy net, torch module)

    @property
    def encoding(self) -> Encoding:
        return self.config.encoding

    def n_parameters(self) -> int:
        return int(sum(w.size for w in self.weights.values()))


def default_path() -> Path:
    """Where the bundled model lives inside the installed package."""
    return Path(str(resources.files("ripieno.model.weights") / f"default{SUFFIX}"))


def checksum(header_text: str, tensors: dict[str, np.ndarray]) -> str:
    """SHA-256 over the header text and every tensor (sorted names, dtype, shape, bytes)."""
    h = hashlib.sha256()
    h.update(header_text.encode())
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(f"|{name}|{a.dtype.str}|{tuple(a.shape)}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save(
    path: str | os.PathLike,
    config: ModelConfig,
    weights: dict[str, np.ndarray],
    meta: dict[str, Any] | None = None,
    tables: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write config + weights (+ tables) atomically (temp file then rename): a crash never leaves half a checkpoint."""
    from safetensors.numpy import save_file

    path = Path(path)
    # the very check a load makes: what is written is what will load
    _check_shapes(config, {WEIGHTS + k: tuple(np.shape(v)) for k, v in weights.items()}
                  | {TABLES + k: tuple(np.shape(v)) for k, v in (tables or {}).items()}, f"checkpoint {path}")
    header = {"format_version": FORMAT_VERSION, "encoding_version": config.encoding.version, "config": config.to_dict(), "meta": meta or {}}
    try:
        text = json.dumps(header, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: meta is not plain JSON ({e})") from None
    tensors = {WEIGHTS + k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
    tensors.update({TABLES + k: np.ascontiguousarray(v) for k, v in (tables or {}).items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": FORMAT, "header": text, "sha256": checksum(text, tensors)})
    os.chmod(tmp, 0o644)  # a model file is data for every user of the box (the daemon may run as its own user)
    os.replace(tmp, path)
    return path


def _sniff(path: Path, where: str) -> None:
    """Before safetensors reads anything: a format-1 torch zip gets the command that converts it,
    and a header longer than any checkpoint's is refused unread (safetensors itself would parse up
    to 100 MB of JSON, several hundred MB resident)."""
    with path.open("rb") as f:
        head = f.read(8)
    if head[:2] == b"PK":
        raise CheckpointError(
            f"{where}: a format-1 checkpoint (a torch .pt file); convert it once with `ripieno-train convert {path} {path.with_suffix(SUFFIX)}`"
        )
    n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
    if n > MAX_HEADER_BYTES:  # also: most garbage, any pickle
        raise CheckpointError(f"{where}: not a ripieno checkpoint (read as safetensors its header would be {n:,} bytes; a checkpoint's is a few KB)")


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _header(meta: Any, where: str) -> tuple[dict[str, Any], str, str]:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("header"), str):
        raise CheckpointError(f"{where}: not a ripieno checkpoint (a safetensors file without ripieno's header)")
    text = meta["header"]
    try:
        header = json.loads(text)
        version = header["format_version"]
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{where}: header is not valid ripieno JSON") from None
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{where}: checkpoint format {version!r}, this ripieno reads format {FORMAT_VERSION}")
    enc_version = header.get("encoding_version")
    if enc_version == 1:
        raise CheckpointError(f"{where}: encoding 1 (time in seconds) is not read by this ripieno (encoding 2, time in beats): retrain it with `ripieno-train fit` on the same data")
    if enc_version != ENCODING_VERSION:
        raise CheckpointError(f"{where}: encoding version {enc_version!r}, this ripieno uses encoding {ENCODING_VERSION}; retrain or use a matching ripieno")
    return header, text, str(meta.get("sha256", ""))


def load(spec: str | os.PathLike = DEFAULT) -> Checkpoint:
    """Load "default" (the bundled model) or a checkpoint path; every problem is one CheckpointError line."""
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
    from safetensors import SafetensorError, safe_open

    try:
        _sniff(path, where)
        with safe_open(str(path), framework="np") as f:
            header, text, digest = _header(f.metadata(), where)
            config = _config(header, where)
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            _check_shapes(config, shapes, where)
            tensors = {k: f.get_tensor(k) for k in shapes}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{where}: unreadable (truncated, damaged or not a safetensors file: {_reason(e)})") from None
    if checksum(text, tensors) != digest:
        raise CheckpointError(f"{where}: checksum mismatch (file damaged or edited)")
    weights = {k[len(WEIGHTS) :]: np.asarray(v, dtype=np.float32) for k, v in tensors.items() if k.startswith(WEIGHTS)}
    tables = {k[len(TABLES) :]: v for k, v in tensors.items() if k.startswith(TABLES)}
    meta = header.get("meta") if isinstance(header.get("meta"), dict) else {}
    return Checkpoint(config=config, weights=weights, meta=meta, path=path, tables=tables)


def _config(header: dict[str, Any], where: str) -> ModelConfig:
    try:
        return ModelConfig.from_dict(header["config"])
    except Exception as e:  # noqa: BLE001 - any wrong type or value in a foreign header is one line
        raise CheckpointError(f"{where}: bad model config ({_reason(e)})") from None


def _check_shapes(config: ModelConfig, shapes: dict[str, tuple[int, ...]], where: str) -> None:
    """Every weight present with the shape the config implies, tables bounded: before any tensor is read."""
    want = expected_shapes(config)
    got = {k[len(WEIGHTS) :]: v for k, v in shapes.items() if k.startswith(WEIGHTS)}
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    if missing or extra or wrong:
        what = []
        if missing:
            what.append(f"missing {missing[0]}")
        if extra:
            what.append(f"unexpected {extra[0][:60]}")
        if wrong:
            what.append(f"{wrong[0]} is {got[wrong[0]]}, not {want[wrong[0]]}")
        raise CheckpointError(f"{where}: weights do not fit the config ({'; '.join(what)})")
    others = [k for k in shapes if not k.startswith((WEIGHTS, TABLES))]
    if others:
        raise CheckpointError(f"{where}: unexpected tensor {others[0][:60]!r}")
    if sum(int(np.prod(v)) for k, v in shapes.items() if k.startswith(TABLES)) > MAX_TABLE_ELEMENTS:
        raise CheckpointError(f"{where}: its tables are larger than this ripieno loads")
