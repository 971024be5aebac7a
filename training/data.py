"""Batching for training: bucketed piece order, TBPTT chunk plans, and the packed and padded paths.

A batch is B *rows*, each a stream of pieces: every step, every active row feeds the next chunk
of at most `tbptt` events of its current piece; its LSTM state rows carry over (detached) to the
next step, so a long piece is learned with long context while memory stays flat. When a row's
piece ends, the row takes the next piece of the queue and its state rows restart at zero.

Pieces are queued so that rows starting together have similar lengths (bucketing): they then
end together, and the padding in each step is small. The packed path feeds PackedSequences (no
padding is computed at all); the padded path runs the dense (B, T) batch and masks the loss.
Both see the same chunks and compute the loss over exactly the same target rows, so they are
interchangeable (tested) and the faster one on the device wins.

Padded-path state: a row whose chunk is shorter than the step's longest is always a row whose
piece ends in this chunk (continuing rows take full `tbptt` chunks), and such a row's state is
reset before its next piece, so the state it picks up from padding is never used.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

Batching = Literal["packed", "padded"]
State = tuple[torch.Tensor, torch.Tensor]

# Column indices in events.COLUMNS order (pitch, step, duration, velocity, role, pos, bar).
_PITCH, _STEP, _DURATION, _BAR = 0, 1, 2, 6


# ------------------------------------------------------------------------------------ order


def bucketed_order(lengths: Sequence[int], rows: int, rng: np.random.Generator, jitter: float = 0.1) -> np.ndarray:
    """Piece indices in queue order: groups of `rows` pieces of similar length, groups shuffled.

    Lengths are jittered multiplicatively (±jitter) before sorting so the groups differ from
    epoch to epoch while staying similar in length.
    """
    n = len(lengths)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    keys = np.asarray(lengths, dtype=np.float64) * np.exp(rng.uniform(-jitter, jitter, size=n))
    by_length = np.argsort(keys, kind="stable")
    groups = [by_length[i : i + rows] for i in range(0, n, rows)]
    return np.concatenate([groups[i] for i in rng.permutation(len(groups))]).astype(np.int64)


def random_order(lengths: Sequence[int], rows: int, rng: np.random.Generator) -> np.ndarray:
    """The notebook way: pieces in random order (random batches padded to their longest).

    Same signature as `bucketed_order` so the two are interchangeable.
    """
    return rng.permutation(len(lengths)).astype(np.int64)


# ------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Chunk:
    """One training step: for each active batch row, a slice of one piece.

    Row r feeds tokens[start:stop] of piece `pieces[i]` and predicts tokens[start+1:stop+1].
    `fresh[i]` means the row starts a new piece: its state rows must be zero.
    """

    rows: tuple[int, ...]
    pieces: tuple[int, ...]
    starts: tuple[int, ...]
    stops: tuple[int, ...]
    fresh: tuple[bool, ...]

    @property
    def lengths(self) -> list[int]:
        return [b - a for a, b in zip(self.starts, self.stops)]

    @property
    def targets(self) -> int:
        """Real (non-padding) predicted events in this step."""
        return sum(self.lengths)


def plan_chunks(lengths: Sequence[int], order: Sequence[int], rows: int, tbptt: int | None) -> list[Chunk]:
    """The steps of one pass over the pieces in `order`, `rows` rows at a time.

    tbptt=None feeds every piece whole (full back-propagation through time). Pieces with fewer
    than 2 events have nothing to predict and are skipped. Rows go idle when the queue is empty.
    """
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    if tbptt is not None and tbptt < 1:
        raise ValueError(f"tbptt must be >= 1 (or None for full BPTT), got {tbptt}")
    queue = iter([int(p) for p in order if lengths[p] >= 2])
    current: list[list[int] | None] = [None] * rows  # [piece, next start] per row
    plan: list[Chunk] = []
    while True:
        fresh_rows = set()
        for r in range(rows):
            if current[r] is None:
                nxt = next(queue, None)
                if nxt is not None:
                    current[r] = [nxt, 0]
                    fresh_rows.add(r)
        active = [r for r in range(rows) if current[r] is not None]
        if not active:
            return plan
        ps, ss, es, fs = [], [], [], []
        for r in active:
            piece, start = current[r]  # type: ignore[misc]
            last = lengths[piece] - 1  # inputs can go up to the second-to-last event
            stop = last if tbptt is None else min(start + tbptt, last)
            ps.append(piece)
            ss.append(start)
            es.append(stop)
            fs.append(r in fresh_rows)
            current[r] = None if stop >= last else [piece, stop]
        plan.append(Chunk(tuple(active), tuple(ps), tuple(ss), tuple(es), tuple(fs)))


# ------------------------------------------------------------------------------ augmentation


def augment(arr: np.ndarray, rng: np.random.Generator, transpose: int = 0, tempo: float = 0.0, bar_dropout: float = 0.0) -> np.ndarray:
    """A transposed (and tempo-scaled, bar-less) copy of an (N, 7) event array.

    The shift is drawn uniformly from [-transpose, transpose] semitones, narrowed so every pitch
    stays in 0..127; the tempo factor is exp(U(-tempo, tempo)) on steps and durations (in beats
    this leaves the grid: 0 for scores). With probability bar_dropout the piece forgets its
    bars (bar length 0, unknown), as a player's performance is heard by the daemon: the model
    must play in time from the beat alone.
    """
    out = np.array(arr, dtype=np.float32, copy=True)
    if len(out) == 0:
        return out
    if transpose > 0:
        lo = max(-transpose, int(-out[:, _PITCH].min()))
        hi = min(transpose, int(127 - out[:, _PITCH].max()))
        if lo <= hi:
            out[:, _PITCH] += rng.integers(lo, hi + 1)
    if tempo > 0:
        out[:, [_STEP, _DURATION]] *= np.float32(np.exp(rng.uniform(-tempo, tempo)))
    if bar_dropout > 0 and rng.random() < bar_dropout:
        out[:, _BAR] = 0.0
    return out


# ------------------------------------------------------------------------------------ tensors


@dataclass
class Batch:
    """A chunk as tensors: inputs/targets (B, T, K) padded with zeros, lengths (B,) on the CPU."""

    inputs: torch.Tensor
    targets: torch.Tensor
    lengths: torch.Tensor

    def to(self, device: torch.device) -> Batch:
        return Batch(self.inputs.to(device, non_blocking=True), self.targets.to(device, non_blocking=True), self.lengths)


def make_batch(tokens: Sequence[np.ndarray], chunk: Chunk) -> Batch:
    """Gather one chunk's input and target tokens from the encoded pieces, zero-padded."""
    lengths = chunk.lengths
    k = tokens[chunk.pieces[0]].shape[1]
    width = max(lengths)
    inputs = np.zeros((len(lengths), width, k), dtype=np.int64)
    targets = np.zeros_like(inputs)
    for i, (p, a, b) in enumerate(zip(chunk.pieces, chunk.starts, chunk.stops)):
        inputs[i, : b - a] = tokens[p][a:b]
        targets[i, : b - a] = tokens[p][a + 1 : b + 1]
    return Batch(torch.from_numpy(inputs), torch.from_numpy(targets), torch.tensor(lengths, dtype=torch.int64))


def zero_state(layers: int, rows: int, hidden: int, device: torch.device | str = "cpu") -> State:
    return torch.zeros(layers, rows, hidden, device=device), torch.zeros(layers, rows, hidden, device=device)


def gather_state(state: State, chunk: Chunk) -> State:
    """The state rows this chunk's rows start from: zero for fresh rows, carried otherwise."""
    idx = torch.tensor(chunk.rows, device=state[0].device)
    keep = torch.tensor([not f for f in chunk.fresh], dtype=state[0].dtype, device=state[0].device).view(1, -1, 1)
    return state[0].index_select(1, idx) * keep, state[1].index_select(1, idx) * keep


def scatter_state(state: State, chunk: Chunk, new: State) -> State:
    """The full state with this chunk's rows replaced by their new, detached values (TBPTT cut)."""
    idx = torch.tensor(chunk.rows, device=state[0].device)
    h, c = state[0].detach().clone(), state[1].detach().clone()
    h.index_copy_(1, idx, new[0].detach())
    c.index_copy_(1, idx, new[1].detach())
    return h, c


# -------------------------------------------------------------------------------- the paths


def forward_rows(model: nn.Module, batch: Batch, state: State | None, batching: Batching) -> tuple[torch.Tensor, torch.Tensor, State]:
    """Run the LSTM over a batch; returns (hidden rows (N, H), target rows (N, K), new state).

    packed: the PackedSequence's data rows and the targets packed the same way.
    padded: the dense (B, T) output, rows selected by the length mask.
    """
    if batching == "packed":
        x = pack_padded_sequence(batch.inputs, batch.lengths, batch_first=True, enforce_sorted=False)
        y = pack_padded_sequence(batch.targets, batch.lengths, batch_first=True, enforce_sorted=False)
        hidden, new_state = model(x, state)
        assert isinstance(hidden, PackedSequence)
        return hidden.data, y.data, new_state
    if batching == "padded":
        hidden, new_state = model(batch.inputs, state)
        mask = torch.arange(batch.inputs.shape[1]).unsqueeze(0) < batch.lengths.unsqueeze(1)
        mask = mask.to(hidden.device)
        return hidden[mask], batch.targets[mask], new_state
    raise ValueError(f"batching must be 'packed' or 'padded', got {batching!r}")


class TrainStep(nn.Module):
    """Forward + loss in one module, so DistributedDataParallel sees every parameter's use.

    The heads live in `NoteLSTM.loss`; wrapping both in one forward lets DDP's reducer cover
    the LSTM and the heads alike.
    """

    def __init__(self, model: nn.Module, batching: Batching) -> None:
        super().__init__()
        self.model = model
        self.batching: Batching = batching

    def forward(self, batch: Batch, state: State | None) -> tuple[dict[str, torch.Tensor], State, int]:
        hidden, targets, new_state = forward_rows(self.model, batch, state, self.batching)
        return self.model.loss(hidden, targets), new_state, int(targets.shape[0])


def iterate_chunks(tokens: Sequence[np.ndarray], plan: Sequence[Chunk], device: torch.device) -> Iterator[tuple[Chunk, Batch]]:
    """(chunk, batch on device) pairs in plan order."""
    for chunk in plan:
        yield chunk, make_batch(tokens, chunk).to(device)
