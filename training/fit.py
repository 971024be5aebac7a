"""The training loop: AdamW, warmup + cosine LR, clipping, TBPTT, early stopping, resume, DDP.

One function, `fit`, serves a laptop and `torchrun`: under torchrun (WORLD_SIZE > 1) the same
loop wraps the model in DistributedDataParallel (gloo on CPU, nccl on CUDA), each rank takes its
share of pieces through a DistributedSampler, and only rank 0 writes files or logs results.

Carrying LSTM state across TBPTT chunks means a rank cannot simply stop early or run an extra
step: every rank must run the same number of optimizer steps, or the gradient all-reduce
deadlocks. Each epoch, ranks agree (all-reduce MIN) on the shortest plan and cut theirs to it;
the cut steps are the end-of-epoch drain where few rows are still busy.

Files in the run directory: `model.safetensors` (the best checkpoint by validation loss, the format of
ripieno.model.checkpoint), `last.pt` (tensors-only resume state), `metrics.csv` (one row per
epoch), `loss.png`.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from ripieno.model import network
from ripieno.model.encoding import Encoding
from ripieno.model.network import ModelConfig, NoteLSTM

from .data import Batch, Batching, State, TrainStep, augment, bucketed_order, gather_state, iterate_chunks, plan_chunks, scatter_state, zero_state
from .batching_choice import measured_batching
from .plot import loss_curve

log = logging.getLogger(__name__)

HEADS = ("pitch", "step", "duration", "velocity", "total")
BEST, RESUME, METRICS, CURVE = "model.safetensors", "last.pt", "metrics.csv", "loss.png"


class FitError(Exception):
    """A training request that cannot run (bad data, bad run dir); str() is one line for the user."""


MIN_VAL_NOTES = 200  # fewer predicted validation notes than this cannot tell a better epoch from noise: no early stop


@dataclass(frozen=True)
class FitConfig:
    """How to train (the model's shape is ModelConfig). JSON-able; written into checkpoint meta."""

    epochs: int = 20
    batch: int = 64  # rows: pieces trained side by side
    tbptt: int | None = 128  # events per chunk; None = whole pieces (full BPTT)
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_fraction: float = 0.05  # cosine decays to lr * this at the last planned step
    clip: float = 1.0  # max global gradient norm; 0 = no clipping
    patience: int = 3  # epochs without validation improvement before stopping (only with MIN_VAL_NOTES to judge by)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    batching: str = "auto"  # auto | packed | padded
    transpose: int = 0  # augmentation: random shift in [-transpose, transpose] semitones per piece and epoch
    tempo: float = 0.0  # augmentation: steps/durations scaled by exp(U(-tempo, tempo))
    bar_dropout: float = 0.5  # augmentation: share of pieces per epoch seen without their bars (as the daemon hears a player)
    max_minutes: float | None = None  # stop (after validating) once this much time has passed
    progress: bool = True

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch >= 1, "batch must be >= 1"),
            (self.tbptt is None or self.tbptt >= 1, "tbptt must be >= 1 (0 on the command line = full BPTT)"),
            (self.lr > 0, "lr must be > 0"),
            (self.clip >= 0, "clip must be >= 0"),
            (self.patience >= 1, "patience must be >= 1"),
            (self.device in ("auto", "cpu", "cuda"), "device must be auto, cpu or cuda"),
            (self.batching in ("auto", "packed", "padded"), "batching must be auto, packed or padded"),
            (0 <= self.transpose <= 24, "transpose must be in 0..24 semitones"),
            (0 <= self.tempo <= 1, "tempo must be in 0..1"),
            (0 <= self.bar_dropout <= 1, "bar_dropout must be in 0..1"),
            (self.max_minutes is None or self.max_minutes > 0, "max-minutes must be > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise FitError(message)


@dataclass
class FitResult:
    checkpoint: Path
    val_pitch_nll: float
    world_size: int
    epochs: int
    best_epoch: int
    stopped: str  # why training ended: epochs | early-stop | time
    seconds: float
    train_tokens_per_s: float
    batching: str
    device: str
    replicas_identical: bool  # under DDP: all ranks ended with the same weights
    metrics: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d["checkpoint"] = str(self.checkpoint)
        return d


# ------------------------------------------------------------------------------ environment


@dataclass(frozen=True)
class Dist:
    """Where this process sits in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def dist_from_env() -> Dist:
    """torchrun's RANK / WORLD_SIZE / LOCAL_RANK, or a single process."""
    try:
        return Dist(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise FitError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (set by torchrun)") from None


def resolve_device(name: str, dist: Dist) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise FitError("--device cuda: no CUDA device is available here (use --device cpu or auto)")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", dist.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def resolve_batching(name: str, device: torch.device) -> tuple[Batching, str]:
    """(batching, why): an explicit choice, the bench's measurement for this device, or the measured default."""
    if name in ("packed", "padded"):
        return name, "requested"  # type: ignore[return-value]
    measured = measured_batching(device)
    if measured is not None:
        return measured, "bench result cached for this device"
    # Measured (issue 5, 2x256, batch 64, CPU): padded+bucketed 26.1k notes/s vs packed 7.9k;
    # on CUDA cuDNN consumes packed sequences natively and skips the padding work.
    return ("packed", "default for CUDA") if device.type == "cuda" else ("padded", "default for CPU (fused oneDNN kernel)")


# -------------------------------------------------------------------------------- schedule


def learning_rate(step: int, total_steps: int, cfg: FitConfig, time_fraction: float = 0.0) -> float:
    """Linear warmup, then cosine decay to lr * min_lr_fraction.

    The cosine's progress is the further along of the steps (of total_steps) and the time
    budget (time_fraction of --max-minutes spent), so a time-limited run still reaches its
    floor when time runs out, however fast or contended the machine turns out to be.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, total_steps - cfg.warmup_steps)
    progress = min(1.0, max((step - cfg.warmup_steps) / span, time_fraction))
    floor = cfg.lr * cfg.min_lr_fraction
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


# ----------------------------------------------------------------------------------- epochs


def train_step(
    step_module: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, state: State, clip: float
) -> tuple[dict[str, torch.Tensor], State, int]:
    """One optimizer step on one chunk: forward + loss, backward, clip, update. Shared with bench."""
    losses, new_state, rows = step_module(batch, state)
    optimizer.zero_grad(set_to_none=True)
    losses["total"].backward()
    if clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return losses, new_state, rows


class Sums:
    """Row-weighted sums of per-head NLL, reducible across ranks."""

    def __init__(self) -> None:
        self.values = torch.zeros(len(HEADS) + 1, dtype=torch.float64)

    def add(self, losses: dict[str, torch.Tensor], rows: int) -> None:
        self.values[:-1] += torch.tensor([float(losses[h].detach()) for h in HEADS], dtype=torch.float64) * rows
        self.values[-1] += rows

    def reduce(self, dist: Dist, device: torch.device) -> Sums:
        """Sum over ranks (on the device: nccl reduces CUDA tensors only)."""
        if dist.active:
            values = self.values.to(device)
            torch_dist.all_reduce(values, op=torch_dist.ReduceOp.SUM)
            self.values = values.cpu()
        return self

    @property
    def rows(self) -> int:
        return int(self.values[-1])

    def means(self, prefix: str) -> dict[str, float]:
        n = max(self.rows, 1)
        return {f"{prefix}_{h}": float(v) / n for h, v in zip(HEADS, self.values[:-1])}


def encode_pieces(pieces: Sequence[np.ndarray], encoding: Encoding, rng: np.random.Generator | None, cfg: FitConfig) -> list[np.ndarray]:
    """Token arrays of the pieces, augmented (transposition, tempo, bars) when an rng is given."""
    if rng is None:
        return [encoding.encode(p) for p in pieces]
    return [encoding.encode(augment(p, rng, cfg.transpose, cfg.tempo, cfg.bar_dropout)) for p in pieces]


def shard(n: int, dist: Dist, epoch: int, seed: int) -> list[int]:
    """This rank's piece indices for an epoch (DistributedSampler: shuffled, equal counts)."""
    if not dist.active:
        return np.random.default_rng([seed, epoch]).permutation(n).tolist()
    sampler = DistributedSampler(range(n), num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return list(sampler)


def agree_on_steps(n: int, dist: Dist, device: torch.device) -> int:
    """The smallest step count over ranks (every rank must run the same number of steps)."""
    if not dist.active:
        return n
    t = torch.tensor([n], dtype=torch.int64, device=device)
    torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MIN)
    return int(t.item())


def replicas_identical(model: nn.Module, dist: Dist, device: torch.device) -> bool:
    """Whether every rank ended with exactly the same weights (what DDP promises), by per-tensor sums."""
    if not dist.active:
        return True
    sums = torch.stack([p.detach().double().sum() for p in model.parameters()]).to(device)
    gathered = [torch.zeros_like(sums) for _ in range(dist.world_size)]
    torch_dist.all_gather(gathered, sums)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def budget_fraction(elapsed: float, cfg: FitConfig, dist: Dist, device: torch.device) -> float:
    """The share of --max-minutes spent (0 without a budget), the largest over ranks so all agree."""
    if cfg.max_minutes is None:
        return 0.0
    t = torch.tensor([elapsed / (cfg.max_minutes * 60)], dtype=torch.float64, device=device)
    if dist.active:
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
    return float(t.item())


@torch.no_grad()
def validate(model: NoteLSTM, tokens: Sequence[np.ndarray], cfg: FitConfig, batching: Batching, device: torch.device, dist: Dist) -> dict[str, float]:
    """Mean NLL per head over every predicted validation note, on all ranks' shares together."""
    model.eval()
    step = TrainStep(model, batching)
    mine = list(range(dist.rank, len(tokens), dist.world_size))
    lengths = [len(tokens[i]) for i in mine]
    local = [tokens[i] for i in mine]
    plan = plan_chunks(lengths, bucketed_order(lengths, cfg.batch, np.random.default_rng(0), jitter=0.0), cfg.batch, cfg.tbptt)
    state = zero_state(model.config.layers, cfg.batch, model.config.hidden, device)
    sums = Sums()
    for chunk, batch in iterate_chunks(local, plan, device):
        losses, new, rows = step(batch, gather_state(state, chunk))
        sums.add(losses, rows)
        state = scatter_state(state, chunk, new)
    model.train()
    return sums.reduce(dist, device).means("val")


# ------------------------------------------------------------------------------------- fit


def fit(
    train: Sequence[np.ndarray],
    val: Sequence[np.ndarray],
    out_dir: Path,
    model_config: ModelConfig | None = None,
    cfg: FitConfig | None = None,
    data_meta: dict[str, Any] | None = None,
    resume: bool = False,
) -> FitResult:
    """Train a NoteLSTM on (N, 7) event arrays; the best checkpoint goes to out_dir/model.safetensors.

    Under torchrun, call it in every rank with the same arguments: the process group is set up
    and torn down here.
    """
    cfg = cfg or FitConfig()
    dist = dist_from_env()
    device = resolve_device(cfg.device, dist)
    train = [p for p in train if len(p) >= 2]
    if not train:
        raise FitError("no training pieces with at least 2 notes")
    out_dir = Path(out_dir)
    resume_path = out_dir / RESUME
    if resume and not resume_path.is_file():
        raise FitError(f"--resume: {resume_path} does not exist (nothing to resume)")
    if not resume and resume_path.exists():
        raise FitError(f"{out_dir} already holds a run; pass --resume to continue it or choose another --out")
    if dist.active:
        torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        return _fit(train, val, out_dir, model_config or ModelConfig(), cfg, data_meta or {}, resume, dist, device)
    finally:
        if dist.active:
            torch_dist.destroy_process_group()


def _fit(
    train: Sequence[np.ndarray],
    val: Sequence[np.ndarray],
    out_dir: Path,
    model_config: ModelConfig,
    cfg: FitConfig,
    data_meta: dict[str, Any],
    resume: bool,
    dist: Dist,
    device: torch.device,
) -> FitResult:
    started = time.monotonic()
    batching, why = resolve_batching(cfg.batching, device)
    saved = torch.load(out_dir / RESUME, map_location="cpu", weights_only=True) if resume else None
    if saved is not None:
        stored = ModelConfig.from_dict(json.loads(saved["model_config"]))
        if stored != model_config:
            log.warning("resuming with the run's stored model config %s (the flags asked for %s)", stored, model_config)
        model_config = stored

    torch.manual_seed(cfg.seed)
    model = NoteLSTM(model_config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    val_source = "validation split"
    if not any(len(p) >= 2 for p in val):
        log.warning("no validation pieces: validating on the training pieces (early stopping then only tracks training loss)")
        val, val_source = train, "training pieces (no validation split)"
    val_tokens = encode_pieces(val, model_config.encoding, None, cfg)
    val_notes = sum(max(len(p) - 1, 0) for p in val)
    stop_early = val_notes >= MIN_VAL_NOTES
    if not stop_early and dist.main:
        log.warning(
            "the validation split is too small to stop on (%d pieces, %d predicted notes; %d needed): early stopping is off, "
            "training runs its --epochs or --max-minutes; give it more pieces (e.g. a larger --val-fraction or more files)",
            len(val), val_notes, MIN_VAL_NOTES,
        )

    history: list[dict[str, float]] = []
    total_steps = 0  # the LR schedule's length: set from the first epoch's plan (or the resumed run)
    first_epoch, global_step, best, best_epoch, bad_epochs, spent = 1, 0, math.inf, 0, 0, 0.0
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        first_epoch, global_step = int(saved["epoch"]) + 1, int(saved["step"])
        best, best_epoch, bad_epochs, spent = float(saved["best"]), int(saved["best_epoch"]), int(saved["bad_epochs"]), float(saved["seconds"])
        history = [dict(r) for r in saved["history"]]
        total_steps = int(saved["total_steps"]) if int(saved["epochs_planned"]) == cfg.epochs else 0
        log.info("resuming %s after epoch %d (best val loss %.4f at epoch %d)", out_dir, first_epoch - 1, best, best_epoch)

    step_module: nn.Module = TrainStep(model, batching)
    if dist.active:
        step_module = nn.parallel.DistributedDataParallel(step_module, device_ids=[device.index] if device.type == "cuda" else None)
    if dist.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        log.info(
            "training %s parameters on %d pieces (%d validation), %s, batching %s (%s), world size %d",
            f"{model.n_parameters():,}", len(train), len(val), device, batching, why, dist.world_size,
        )

    stopped = "epochs"
    seen_tokens, train_seconds = 0, 0.0
    time_fraction = budget_fraction(spent, cfg, dist, device)
    for epoch in range(first_epoch, cfg.epochs + 1):
        epoch_start = time.monotonic()
        rng = np.random.default_rng([cfg.seed, epoch, dist.rank])
        mine = shard(len(train), dist, epoch, cfg.seed)
        tokens = encode_pieces([train[i] for i in mine], model_config.encoding, rng, cfg)
        lengths = [len(t) for t in tokens]
        plan = plan_chunks(lengths, bucketed_order(lengths, cfg.batch, rng), cfg.batch, cfg.tbptt)
        plan = plan[: agree_on_steps(len(plan), dist, device)]
        if total_steps == 0:  # the schedule's length, from the first epoch's plan
            total_steps = max(global_step + len(plan) * (cfg.epochs - epoch + 1), 1)
        sums = Sums()
        state = zero_state(model_config.layers, cfg.batch, model_config.hidden, device)
        timed_out = False
        lr = learning_rate(global_step, total_steps, cfg, time_fraction)
        bar = tqdm(total=len(plan), desc=f"epoch {epoch}/{cfg.epochs}", unit="step", disable=not (cfg.progress and dist.main), leave=False)
        model.train()
        for i, (chunk, batch) in enumerate(iterate_chunks(tokens, plan, device)):
            lr = learning_rate(global_step, total_steps, cfg, time_fraction)
            for group in optimizer.param_groups:
                group["lr"] = lr
            losses, new_state, rows = train_step(step_module, model, optimizer, batch, gather_state(state, chunk), cfg.clip)
            state = scatter_state(state, chunk, new_state)
            sums.add(losses, rows)
            global_step += 1
            bar.update()
            if i % 20 == 0:
                bar.set_postfix(loss=f"{float(losses['total'].detach()):.3f}", pitch=f"{float(losses['pitch'].detach()):.3f}")
                time_fraction = budget_fraction(spent + time.monotonic() - started, cfg, dist, device)
                if time_fraction >= 1.0:
                    timed_out = True
                    break
        bar.close()
        epoch_train_seconds = time.monotonic() - epoch_start
        train_metrics = sums.reduce(dist, device).means("train")
        seen_tokens += sums.rows
        train_seconds += epoch_train_seconds
        val_metrics = validate(model, val_tokens, cfg, batching, device, dist)
        row: dict[str, float] = {
            "epoch": epoch,
            "step": global_step,
            "lr": lr,
            **train_metrics,
            **val_metrics,
            "train_tokens_per_s": sums.rows / max(epoch_train_seconds, 1e-9),
            "seconds": time.monotonic() - epoch_start,
        }
        history.append(row)
        improved = row["val_total"] < best - 1e-6
        if improved:
            best, best_epoch, bad_epochs = row["val_total"], epoch, 0
        else:
            bad_epochs += 1
        elapsed = spent + time.monotonic() - started
        if dist.main:
            log.info(
                "epoch %d: train %.4f, val %.4f (pitch %.4f), %.0f notes/s, %.0f s%s",
                epoch, row["train_total"], row["val_total"], row["val_pitch"], row["train_tokens_per_s"], row["seconds"], " *best*" if improved else "",
            )
            if improved:
                meta = _meta(cfg, data_meta, model_config, dist, device, batching, val_source, epoch, best_epoch, row, elapsed)
                network.save(out_dir / BEST, model, meta)
            _write_metrics(out_dir / METRICS, history)
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "model_config": json.dumps(model_config.to_dict()),
                    "epoch": epoch,
                    "step": global_step,
                    "best": best,
                    "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs,
                    "seconds": elapsed,
                    "total_steps": total_steps,
                    "epochs_planned": cfg.epochs,
                    "history": history,
                },
                out_dir / RESUME,
            )
        if timed_out:
            stopped = "time"
            break
        if stop_early and bad_epochs >= cfg.patience:
            stopped = "early-stop"
            break
        time_fraction = budget_fraction(spent + time.monotonic() - started, cfg, dist, device)
        if time_fraction >= 1.0:
            stopped = "time"
            break
    in_sync = replicas_identical(model, dist, device)
    if not in_sync:
        log.warning("rank %d: the replicas' weights differ at the end of training", dist.rank)
    if dist.main and history:
        loss_curve(history, out_dir / CURVE)
    if dist.active:
        torch_dist.barrier()  # rank 0 has written everything before anyone returns

    best_row = next((r for r in history if r["epoch"] == best_epoch), history[-1] if history else {})
    result = FitResult(
        checkpoint=(out_dir / BEST).resolve(),
        val_pitch_nll=float(best_row.get("val_pitch", math.nan)),
        world_size=dist.world_size,
        epochs=int(history[-1]["epoch"]) if history else 0,
        best_epoch=best_epoch,
        stopped=stopped,
        seconds=round(spent + time.monotonic() - started, 2),
        train_tokens_per_s=round(seen_tokens / max(train_seconds, 1e-9), 1),  # all ranks' notes
        batching=batching,
        device=str(device),
        replicas_identical=in_sync,
        metrics={k: round(v, 5) for k, v in best_row.items() if k.startswith(("val_", "train_"))},
    )
    if dist.main:
        log.info(
            "done (%s) after %d epochs in %.0f s: best epoch %d, val pitch NLL %.4f nats/note, checkpoint %s",
            stopped, result.epochs, result.seconds, best_epoch, result.val_pitch_nll, result.checkpoint,
        )
        floor = unigram_nll(train, val)
        if result.val_pitch_nll >= floor:
            log.warning(
                "the network (val pitch NLL %.4f) is no better than the pitch frequencies alone (unigram %.4f): "
                "too little data or training; `ripieno-train eval` compares it with its baselines",
                result.val_pitch_nll, floor,
            )
    return result


def unigram_nll(train: Sequence[np.ndarray], val: Sequence[np.ndarray]) -> float:
    """Validation NLL of the training pitches' frequencies (add-one): the floor a network must beat."""
    counts = np.ones(128)
    for p in train:
        np.add.at(counts, np.clip(np.asarray(p)[:, 0].astype(np.int64), 0, 127), 1)
    logp = np.log(counts / counts.sum())
    rows = [np.clip(np.asarray(p)[1:, 0].astype(np.int64), 0, 127) for p in val if len(p) > 1]
    return float(-logp[np.concatenate(rows)].mean()) if rows else math.inf


def _meta(
    cfg: FitConfig,
    data_meta: dict[str, Any],
    model_config: ModelConfig,
    dist: Dist,
    device: torch.device,
    batching: str,
    val_source: str,
    epoch: int,
    best_epoch: int,
    row: dict[str, float],
    elapsed: float,
) -> dict[str, Any]:
    """What a checkpoint says about how it was made: data, split, settings, metrics, timings."""
    return {
        "data": {**data_meta, "validation": val_source},
        "fit": {k: v for k, v in asdict(cfg).items() if k != "progress"},
        "epochs": epoch,
        "best_epoch": best_epoch,
        "metrics": {k: round(v, 6) for k, v in row.items() if k.startswith(("train_", "val_"))},
        "timings": {"seconds": round(elapsed, 2), "train_tokens_per_s": round(row["train_tokens_per_s"], 1)},
        "world_size": dist.world_size,
        "device": str(device),
        "batching": batching,
        "encoding": model_config.encoding.to_dict(),
        "torch": torch.__version__,
    }


def _write_metrics(path: Path, history: Sequence[dict[str, float]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        for row in history:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
