"""Generator training: one loop, exact resume, optional DistributedDataParallel.

`train_generator` trains the U-Net on a preprocessed person. A step takes `batch_size`
windows of `window` consecutive frames (one reference frame each) and minimises

    l1_weight·(L1 + mouth_weight·L1_mouth) + perceptual_weight·perceptual(middle frames)
    + sync_weight·(−log SyncNet sync probability) + temporal_weight·temporal
    + gan_weight·adversarial(mouth box, from step gan_start)

with Adam. Batches are drawn from a permutation that depends only on (seed, epoch), and the
RNG states go into every checkpoint, so a resumed run takes exactly the steps the
uninterrupted one would have taken. Under `torchrun` each process takes its own slice of every
batch and gradients are averaged by DDP (gloo on CPU, NCCL on CUDA); only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from . import checkpoint, data, discriminator, features, losses, offset_opinion, unet
from .config import Config, TrainConfig
from .dataset import PreparedDataset, load_dataset
from .device import pick_device, reuse_freed_memory
from .generators import BEST, GENERATOR_PREFIX, checkpoints_of, must_match
from .offset_opinion import OffsetOpinion
from .progress import progress_bar

if TYPE_CHECKING:
    from .syncnet import SyncNet

log = logging.getLogger(__name__)


class TrainError(RuntimeError):
    """Training cannot start or continue; the message says what to change."""


@dataclass
class TrainResult:
    checkpoint: Path  # latest
    best: Path  # best validation loss (the latest if validation is too short to choose)
    step: int
    history: list[dict[str, Any]] = field(default_factory=list)
    perceptual: str = ""  # "vgg19" or "ms-ssim"
    seconds: float = 0.0


# ---------------------------------------------------------------- distributed helpers

def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: torch.device) -> bool:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


# ---------------------------------------------------------------- pieces

def batch_indices(step: int, n: int, batch: int, seed: int, rank: int = 0,
                  world: int = 1) -> np.ndarray:
    """Sample indices of one process's part of step `step`: a pure function of its inputs.

    Each epoch is a fresh permutation seeded by (seed, epoch); resuming at any step therefore
    continues with exactly the batches an uninterrupted run would have drawn.
    """
    per_step = batch * world
    steps_per_epoch = max(n // per_step, 1)
    epoch, offset = divmod(step, steps_per_epoch)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=gen).numpy()
    if n < per_step:
        perm = np.resize(perm, per_step)
    start = offset * per_step + rank * batch
    return perm[start: start + batch]


def _collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _frames_of(batch: dict[str, torch.Tensor], cfg: Config
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of windows as frames: model inputs (B·W, 6, S, S), audio input and targets
    (B·W, 3, S, S)."""
    b, w = batch["inputs"].shape[:2]
    s = batch["inputs"].shape[-1]
    audio = unet.audio_window_to_input(batch["audio"].reshape(b * w, *batch["audio"].shape[2:]),
                                       cfg.model.audio_mode)
    return (batch["inputs"].reshape(b * w, 6, s, s), audio,
            batch["targets"].reshape(b * w, 3, s, s))


def reference_frames(ds: PreparedDataset, cfg: Config) -> np.ndarray | None:
    """The frames references are drawn from (`train.reference`); None: each split's own."""
    if cfg.train.reference == "random":
        return None
    if cfg.train.reference != "closed":
        raise TrainError(f"train.reference is {cfg.train.reference!r}; use 'random' or 'closed'")
    closed = data.closed_mouth_frames(ds, cfg)
    if not len(closed):
        log.warning("no lip landmarks to find closed mouths: references are random frames")
        return None
    return closed


def learning_rate(tcfg: TrainConfig, step: int, total: int) -> float:
    """`train.lr`, over the last `train.lr_decay` share of `total` steps falling along a half
    cosine to a twentieth of it."""
    begin = total * (1 - tcfg.lr_decay)
    if tcfg.lr_decay <= 0 or step < begin:
        return tcfg.lr
    t = min((step - begin) / max(total - begin, 1), 1.0)
    return tcfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def total_steps(cfg: Config, n_windows: int) -> int:
    if cfg.train.epochs > 0:
        _, world = _dist_info()
        return cfg.train.epochs * max(n_windows // (cfg.train.batch_size * world), 1)
    return cfg.train.steps


class StepLoss:
    """Computes the weighted loss terms of one batch; holds the frozen helper networks."""

    def __init__(self, cfg: Config, mouth: tuple[int, ...], expert: torch.nn.Module | None,
                 device: torch.device, adversary: Adversary | None = None,
                 audio_std: np.ndarray | None = None):
        self.cfg = cfg
        # (F,) each audio feature's std over the training frames, for train.audio_noise
        self.audio_std = (None if audio_std is None or cfg.train.audio_noise <= 0 else
                          torch.as_tensor(audio_std, dtype=torch.float32, device=device))
        self.mouth = mouth
        self.adversary = adversary
        self.perceptual, self.perceptual_name = losses.perceptual_loss()
        self.perceptual.to(device)
        if expert is not None and cfg.train.window != cfg.syncnet.n_frames:
            raise TrainError(
                f"the sync loss shows SyncNet {cfg.syncnet.n_frames} consecutive frames, but "
                f"train.window is {cfg.train.window}; set train.window="
                f"{cfg.syncnet.n_frames} or train.sync_weight=0")
        self.expert = expert  # the frozen SyncNet of the sync loss

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor],
                 step: int) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        tcfg = self.cfg.train
        b, w = batch["inputs"].shape[:2]
        s = batch["inputs"].shape[-1]
        if self.audio_std is not None and model.training:
            noise = torch.randn_like(batch["audio"]) * (tcfg.audio_noise * self.audio_std)
            batch = {**batch, "audio": batch["audio"] + noise}
        inputs, audio, target = _frames_of(batch, self.cfg)
        pred = model(inputs.contiguous(memory_format=torch.channels_last), audio)  # (B·W, 3, S, S)
        # in the model output's memory format: mixed formats cost copies in every loss term
        target = target.contiguous(memory_format=torch.channels_last)
        weights = {"l1": tcfg.l1_weight, "perceptual": tcfg.perceptual_weight,
                   "temporal": tcfg.temporal_weight}
        terms = {"l1": losses.weighted_l1(pred, target, self.mouth, tcfg.mouth_weight)}
        if weights["perceptual"]:  # a term weighted 0 would still cost its forward/backward
            # one frame per window (the middle one): a window's frames are 40 ms apart and
            # nearly alike, so this is the same signal at 1/window of the cost (MS-SSIM on all
            # was a tenth of a cpu step), and as many frames a step as SyncTalk_2D's batch
            mid = torch.arange(b, device=pred.device) * w + w // 2
            terms["perceptual"] = self.perceptual(pred[mid], target[mid])
        if weights["temporal"] and w > 1:
            terms["temporal"] = losses.temporal_loss(pred.reshape(b, w, 3, s, s),
                                                     target.reshape(b, w, 3, s, s), self.mouth)
        if self.expert is not None and step >= tcfg.sync_start:
            terms["sync"] = self._sync_loss(pred.reshape(b, w * 3, s, s), batch["mel"])
            weights["sync"] = tcfg.sync_weight
        if self.adversary is not None and self.adversary.is_on(step):
            terms["adversarial"] = self.adversary.generator_term(pred)
            weights["adversarial"] = tcfg.gan_weight
        total = sum(weights[k] * v for k, v in terms.items())
        return total, {k: v.item() for k, v in terms.items()}, pred

    def _sync_loss(self, faces: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        size = self.cfg.syncnet.image_size
        if faces.shape[-1] != size:
            faces = F.interpolate(faces, size=(size, size), mode="bilinear", align_corners=False,
                                  antialias=True)
        prob = self.expert.sync_probability(faces, mel).clamp(1e-6, 1.0)
        return -torch.log(prob).mean()


class Adversary:
    """The mouth discriminator and its optimizer: scores generated mouths for the generator's
    adversarial term, then learns from each batch's real and generated mouths."""

    def __init__(self, cfg: Config, mouth: tuple[int, ...], device: torch.device):
        self.mouth = mouth
        self.start = cfg.train.gan_start
        self.net = discriminator.MouthDiscriminator().to(device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.train.gan_lr,
                                          betas=(0.5, 0.999))

    def is_on(self, step: int) -> bool:
        """From `train.gan_start` on, both the generator's term and the learning."""
        return step >= self.start

    def generator_term(self, pred: torch.Tensor) -> torch.Tensor:
        self.net.requires_grad_(False)  # the generator's backward pass leaves it alone
        try:
            return discriminator.generator_loss(
                self.net(discriminator.mouth_crops(pred, self.mouth)))
        finally:
            self.net.requires_grad_(True)

    def learn(self, pred: torch.Tensor, target: torch.Tensor) -> float:
        """One discriminator step on (N, 3, S, S) generated (detached here) and real frames."""
        real = discriminator.mouth_crops(target, self.mouth)
        fake = discriminator.mouth_crops(pred.detach(), self.mouth)
        loss = discriminator.discriminator_loss(self.net(real), self.net(fake))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        _, world = _dist_info()
        if world > 1:  # every rank's discriminator takes the same averaged step
            for p in self.net.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= world
        self.optimizer.step()
        return loss.item()

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


class WeightAverage:
    """An exponential moving average of a model's weights (`train.ema`), kept beside it.

    At a constant lr the weights wander around a good region; their average sits nearer its
    middle, so the saved model moves less from one checkpoint to the next. The first steps
    keep less of the average (decay (1 + n) / (10 + n) until that reaches `decay`), else the
    random start would linger in it for hundreds of steps. BatchNorm's running statistics are
    averaged like the weights; integer counters are copied.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise TrainError(f"train.ema = {decay} must be between 0 and 1 (0.995 keeps about "
                             "the last 200 steps; 0 turns the average off)")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        keep = min(self.decay, (1 + self.updates) / (10 + self.updates))
        current = model.state_dict()
        for key, avg in self.model.state_dict().items():
            if avg.dtype.is_floating_point:
                avg.lerp_(current[key].detach(), 1.0 - keep)
            else:
                avg.copy_(current[key])

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates}

    def load_state_dict(self, state: dict[str, Any], averaged: dict[str, torch.Tensor]) -> None:
        self.updates = int(state["updates"])
        self.model.load_state_dict(averaged)


# ---------------------------------------------------------------- the loop

@reuse_freed_memory()
def train_generator(
    ds: PreparedDataset,
    cfg: Config,
    out_dir: str | Path,
    audio_features: np.ndarray,
    expert: torch.nn.Module | None = None,
    steps: int | None = None,
    resume: bool = True,
    device: str | None = None,
    progress: bool = True,
    on_log: Callable[[list[dict[str, Any]]], None] | None = None,
    log_every: int = 25,
    variants: np.ndarray | None = None,
) -> TrainResult:
    """Train (or continue training) the generator of one person.

    Args:
        audio_features: (T, F) float32 audio features per video frame (`ave`: 512 from the
            SyncNet audio encoder; `hubert`: 2048, two HuBERT frames), T = ds.n_frames.
        expert: the frozen lip-sync expert (SyncNet) for the sync loss (None: no sync loss).
        steps: stop after this many steps in total (default: from cfg.train).
        resume: continue from the newest checkpoint in out_dir when there is one.
        on_log: called with the history after every log line (live plots in notebooks).
        variants: (V, T, F) more feature sets of the same frames (`train.audio_variants`),
            heard by training samples at random beside `audio_features`.
    """
    out_dir = Path(out_dir)
    dev = pick_device(device)
    distributed = init_distributed(dev)
    rank, world = _dist_info()
    tcfg = cfg.train
    for feats in [audio_features, *(variants if variants is not None else [])]:
        if len(feats) != ds.n_frames or feats.shape[-1] != audio_features.shape[-1]:
            raise TrainError(f"audio features cover {len(feats)} frames but the dataset has "
                             f"{ds.n_frames}; recompute the features (delete the cached "
                             "aud_*.npy)")
    torch.manual_seed(tcfg.seed + rank)
    np.random.seed(tcfg.seed + rank)
    split = data.split_frames(ds.n_frames, tcfg.heldout_fraction, tcfg.val_fraction)
    patches = data.model_patches(ds, cfg.model.image_size)
    from . import syncnet

    mels = syncnet.audio_windows(cfg.syncnet, ds.mel_windows(), audio_features)
    references = reference_frames(ds, cfg)
    train_set = data.GeneratorSamples.for_indices(patches, audio_features, mels, split.train, cfg,
                                                  augment=tcfg.augment, references=references,
                                                  variants=variants)
    val_set = data.GeneratorSamples.for_indices(patches, audio_features, mels, split.val, cfg,
                                                augment=False, references=references)
    mouth = data.mouth_box(ds, cfg.model.image_size)

    model = unet.Generator.from_config(cfg.model)
    model.start_at_colour(data.mean_colour(patches, split.train, cfg))
    model = model.to(dev, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=tcfg.lr)
    if expert is not None:
        expert = expert.to(dev).eval().requires_grad_(False)
    adversary = Adversary(cfg, mouth, dev) if tcfg.gan_weight > 0 else None
    average = WeightAverage(model, tcfg.ema) if tcfg.ema > 0 else None
    loss_fn = StepLoss(cfg, mouth, expert if tcfg.window > 1 else None, dev, adversary,
                       audio_std=audio_features[split.train].std(0))
    history: list[dict[str, Any]] = []
    step = 0
    latest = checkpoints_of(out_dir)
    if resume and latest:
        state = checkpoint.load_checkpoint(latest[-1], kind="generator",
                                           expect=must_match(cfg), map_location=dev)
        aux = state.get("aux", {})
        # with an average on, "model" is the average and the raw weights are in aux
        model.load_state_dict(aux.get("raw_model", state["model"]))
        optimizer.load_state_dict(state["optimizer"])
        if average is not None:
            if "average" in aux:
                average.load_state_dict(aux["average"], state["model"])
            else:  # the average starts now, from the weights trained so far
                average.model.load_state_dict(model.state_dict())
        step = state["step"]
        history = state["extra"].get("history", [])
        checkpoint.set_rng_state(state["rng"])
        if adversary is not None and "discriminator" in aux:
            adversary.load_state_dict(aux["discriminator"])
        log.info("resumed from %s at step %d", latest[-1].name, step)
    best_val = min((h["val_l1"] for h in history if "val_l1" in h), default=math.inf)
    keep_best = len(split.val) >= tcfg.best_min_val_frames
    if not keep_best and rank == 0:
        log.warning("the validation block is only %d frames (< train.best_min_val_frames = %d):"
                    " too few to pick a best checkpoint, so none is kept and inference uses "
                    "the newest", len(split.val), tcfg.best_min_val_frames)
    net = model
    if distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None)
    total = steps if steps is not None else total_steps(cfg, len(train_set))
    amp = (torch.autocast("cuda", dtype=torch.float16) if dev.type == "cuda"
           else contextlib.nullcontext())
    scaler = torch.amp.GradScaler("cuda", enabled=dev.type == "cuda")
    bar = progress_bar(total=total, initial=step, desc="generator", unit="step",
                       enabled=progress and rank == 0)
    t_start = t_log = time.perf_counter()
    first_step, planned = step, total
    running: dict[str, list[float]] = {}
    last_path = latest[-1] if latest else out_dir / f"{GENERATOR_PREFIX}{step:07d}.pt"
    saved_model = model if average is None else average.model  # validated, saved, picked
    while step < total:
        idx = batch_indices(step, len(train_set), tcfg.batch_size, tcfg.seed, rank, world)
        batch = _to(_collate([train_set[int(i)] for i in idx]), dev)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(tcfg, step, total)
        model.train()
        try:
            with amp:
                loss, parts, pred = loss_fn(net, batch, step)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if adversary is not None and adversary.is_on(step):
                parts["discriminator"] = adversary.learn(pred.float(),
                                                         batch["targets"].flatten(0, 1))
        except torch.OutOfMemoryError as exc:
            raise TrainError(
                f"out of memory at batch size {tcfg.batch_size} on {dev}; set "
                f"train.batch_size={max(tcfg.batch_size // 2, 1)} (training resumes from the "
                "last checkpoint)") from exc
        if average is not None:
            average.update(model)
        step += 1
        for k, v in {"loss": loss.item(), **parts}.items():
            running.setdefault(k, []).append(v)
        bar.update(1)
        if _refit_now(step, first_step, total, tcfg):
            total = _fit_budget(step, planned, first_step, time.perf_counter() - t_start, tcfg,
                                rank, world, said=total if step > first_step + TIMING_STEPS
                                else None)
            bar.total = total
            bar.refresh()
        if step % log_every == 0 or step == total:
            now = time.perf_counter()
            entry = {"step": step, "lr": optimizer.param_groups[0]["lr"],
                     "s_per_step": (now - t_log) / max(len(running["loss"]), 1)}
            entry.update({k: float(np.mean(v)) for k, v in running.items()})
            running, t_log = {}, now
            if step % tcfg.val_every == 0 or step == total:
                entry["val_l1"] = validate(saved_model, val_set, cfg, dev)
            history.append(entry)
            bar.set_postfix(loss=f"{entry['loss']:.4f}")
            if rank == 0:
                log.info("step %d %s", step, " ".join(
                    f"{k}={v:.4g}" for k, v in entry.items() if k != "step"))
                if on_log is not None:
                    on_log(history)
        if rank == 0 and (step % tcfg.save_every == 0 or step == total):
            val = next((h["val_l1"] for h in reversed(history)
                        if h["step"] == step and "val_l1" in h), None)
            if val is None:
                val = validate(saved_model, val_set, cfg, dev)
            last_path = _save(out_dir, model, optimizer, cfg, step, history, loss_fn, val,
                              adversary, average)
            if keep_best and val < best_val:
                best_val = val
                checkpoint.save_checkpoint(out_dir / BEST, kind="generator", model=saved_model,
                                           cfg=cfg,
                                           step=step, extra=_extra(history, loss_fn, val),
                                           with_rng=False)
    bar.close()
    seconds = time.perf_counter() - t_start
    if distributed:
        dist.barrier()
    best = out_dir / BEST if keep_best and (out_dir / BEST).is_file() else last_path
    return TrainResult(last_path, best, step, history, loss_fn.perceptual_name, seconds)


TIMING_STEPS = 20  # steps timed before the expected end is said (the first are slower)
REFIT_EVERY = 100  # steps between later fits of the budget to the rate measured so far


def _refit_now(step: int, first_step: int, total: int, tcfg: TrainConfig) -> bool:
    """Fit the step count to the budget after the first TIMING_STEPS, then every REFIT_EVERY
    steps until the lr's decay begins (its schedule depends on the count, so that stays).

    Why again: the first steps run while the machine is busier (another run's SyncNet, the
    caches filling); fitted once, a 45-minute budget ended after 36 (real_talk_e, 2 cores).
    """
    done = step - first_step
    if step >= total or done < TIMING_STEPS or (done - TIMING_STEPS) % REFIT_EVERY:
        return False
    return tcfg.lr_decay <= 0 or step < total * (1 - tcfg.lr_decay)


def _fit_budget(step: int, total: int, first_step: int, elapsed: float, tcfg: TrainConfig,
                rank: int, world: int, said: int | None = None) -> int:
    """The step count for the rate measured so far: `total` (the planned count) cut to end
    within `train.minutes` when set (ranks agree on the slowest rank's rate), and when it
    ends. said: the count fitted before; it is logged again only when it moves by > 2 %."""
    rate = elapsed / (step - first_step)
    if world > 1:
        rate_t = torch.tensor([rate], dtype=torch.float64)
        dist.all_reduce(rate_t, op=dist.ReduceOp.MAX)
        rate = float(rate_t.item())
    planned = total
    if tcfg.minutes > 0:
        fits = step + int(max(tcfg.minutes * 60 - elapsed, 0) / rate)
        total = max(min(total, fits), step)
    if said is not None and abs(total - said) <= 0.02 * said:
        return total
    if tcfg.minutes > 0 and total < planned and rank == 0:
        log.info("train.minutes = %g: %d steps fit (not %d)", tcfg.minutes, total, planned)
    if rank == 0:
        left = rate * (total - step)
        log.info("generator: %.2f s a step, %d steps to go: about %.0f min more (ends about %s)",
                 rate, total - step, left / 60,
                 time.strftime("%H:%M", time.localtime(time.time() + left)))
    return total


def _syncnet_differs(path: Path, cfg: Config) -> bool:
    """The saved SyncNet hears another input (mel vs speech features, or another size)."""
    saved = checkpoint.load_checkpoint(path, kind="syncnet")["config"]
    if saved.syncnet.audio_input != cfg.syncnet.audio_input:
        return True
    return cfg.syncnet.audio_input == "speech" and saved.model.audio_dim != cfg.model.audio_dim


def _extra(history: list[dict[str, Any]], loss_fn: StepLoss, val: float) -> dict[str, Any]:
    return {"history": history, "perceptual": loss_fn.perceptual_name, "val_l1": val,
            "mouth_box": list(loss_fn.mouth)}


def _save(out_dir: Path, model, optimizer, cfg: Config, step: int, history, loss_fn,
          val: float, adversary: Adversary | None = None,
          average: WeightAverage | None = None) -> Path:
    """A rolling checkpoint: the average as "model" when there is one (the raw weights and
    the discriminator in "aux", for resuming)."""
    path = out_dir / f"{GENERATOR_PREFIX}{step:07d}.pt"
    aux: dict[str, Any] = {}
    if adversary is not None:
        aux["discriminator"] = adversary.state_dict()
    if average is not None:
        aux["raw_model"] = model.state_dict()
        aux["average"] = average.state_dict()
        model = average.model
    checkpoint.save_checkpoint(path, kind="generator", model=model, cfg=cfg, step=step,
                               optimizer=optimizer, extra=_extra(history, loss_fn, val), aux=aux)
    for old in checkpoints_of(out_dir)[: -cfg.train.keep_last]:
        old.unlink()
    return path


@torch.no_grad()
def validate(model: torch.nn.Module, val_set: data.GeneratorSamples, cfg: Config,
             device: torch.device, max_windows: int = 16) -> float:
    """Mean L1 on validation windows, each with a fixed reference (same every call).

    The windows go through the model `train.batch_size` at a time: all 16 × 5 frames at once
    took more than 10 GB at 320 px, more than a training step."""
    model.eval()
    rng_state = torch.get_rng_state()
    torch.manual_seed(12345)  # the same references every time, without touching training RNG
    n = min(len(val_set), max_windows)
    picks = np.linspace(0, len(val_set) - 1, n).round().astype(int)
    items = [val_set[int(i)] for i in picks]
    torch.set_rng_state(rng_state)
    total, count = 0.0, 0
    for start in range(0, len(items), max(cfg.train.batch_size, 1)):
        inputs, audio, target = _frames_of(
            _to(_collate(items[start: start + cfg.train.batch_size]), device), cfg)
        pred = model(inputs, audio)
        total += F.l1_loss(pred, target, reduction="sum").item()
        count += pred.numel()
    model.train()
    return total / count



# ---------------------------------------------------------------- a whole person

@dataclass
class PersonResult:
    """What `train_person` made: the lip-sync expert, the audio features and the generator."""

    syncnet_path: Path
    syncnet_accuracy: float | None  # held-out sync/off-sync accuracy (None: reused, unknown)
    features_path: Path
    generator: TrainResult
    # the check's audio offset beside SyncNet's reading of the held-out tail (None on the
    # processes of a multi-process run other than the first)
    audio_offset: OffsetOpinion | None = None


def train_person(
    name: str,
    cfg: Config,
    dataset_root: str | Path = "dataset",
    checkpoints_root: str | Path = "checkpoints",
    steps: int | None = None,
    syncnet_steps: int | None = None,
    ave_weights: str | Path | None = None,
    resume: bool = True,
    device: str | None = None,
    progress: bool = True,
    on_log: Callable[[list[dict[str, Any]]], None] | None = None,
) -> PersonResult:
    """SyncNet (trained once, reused), audio features (`ave`, `whisper` or `hubert`), then the
    generator.

    ave_weights: SyncTalk_2D's `audio_visual_encoder.pth` if you have it; otherwise the audio
    encoder of the person's own SyncNet provides the features. `hubert` features come from
    local HuBERT weights (`model.hubert_dir`, see hubert.resolve_dir); SyncNet, which the sync
    loss uses, works on mels in every mode. `whisper` features come from the Whisper encoder
    (whisper.resolve_source); the model's per-frame size is written into `model.audio_dim`.
    """
    from . import hubert, syncnet, whisper

    mode = cfg.model.audio_mode
    if mode not in ("ave", "hubert", "whisper"):
        raise TrainError(
            f"audio mode {mode!r} needs pretrained speech features (WeNet weights) that this "
            "workbench does not extract yet; use model.audio_mode='whisper' (the offline "
            "Whisper encoder), 'ave' (features from the person's own SyncNet) or 'hubert' "
            "(local HuBERT weights)")
    if cfg.syncnet.audio_input == "speech" and mode != "whisper":
        raise TrainError("syncnet.audio_input='speech' hears the generator's speech features, "
                         f"which audio_mode {mode!r} does not have; use model.audio_mode="
                         "'whisper' or syncnet.audio_input='mel'")
    if cfg.train.audio_variants and mode != "whisper":
        raise TrainError("train.audio_variants pitch-shifts the sound for `whisper` features; "
                         f"audio mode {mode!r} has none (set train.audio_variants=())")
    hubert_dir = hubert.resolve_dir(cfg.model.hubert_dir, checkpoints_root)
    if mode == "hubert":
        hubert.check_dir(hubert_dir)  # say so now, not after SyncNet has trained
    speech = None
    if mode == "whisper":  # load it now: a missing model is said before SyncNet trains
        whisper_source = whisper.resolve_source(cfg.whisper.model_dir)
        speech = whisper.WhisperFeatures.load(whisper_source, cfg.whisper, cfg.media, device)
        features.check_dim(speech, cfg, "this configuration")
        cfg = cfg.override({"model.audio_dim": speech.dim})
        log.info("whisper features: %s, layers %s, %d values a frame", speech.name,
                 list(speech.layers), speech.dim)
        if whisper.english_only(whisper_source):
            log.info("%s knows English only: speech in other languages still moves the mouth, "
                     "less reliably; set whisper.model_dir to a multilingual Whisper for them",
                     speech.name)
    ds = load_dataset(name, dataset_root)
    out_dir = Path(checkpoints_root) / name
    init_distributed(pick_device(device))
    rank, _ = _dist_info()
    sync_path = out_dir / "syncnet.pt"
    accuracy = None
    # a speech SyncNet hears the generator's features: those come first (they need no SyncNet)
    speech_feats = (features.whisper_features_for(ds, speech, str(whisper_source))
                    if mode == "whisper" and rank == 0 else None)
    stale = sync_path.is_file() and _syncnet_differs(sync_path, cfg)
    if rank == 0 and (not sync_path.is_file() or syncnet_steps or stale):
        if stale:
            log.info("%s was trained with other syncnet settings: training it again", sync_path)
        result = syncnet.train_syncnet(ds, cfg, out_dir, steps=syncnet_steps, device=device,
                                       progress=progress, resume=resume and not stale,
                                       features=speech_feats)
        accuracy = result.val_accuracy
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    expert = syncnet.load_syncnet(sync_path, device=device)
    if mode == "hubert":
        features_path = ds.paths.folder / "aud_hu.npy"

        def compute() -> np.ndarray:
            return features.hubert_features_for(ds, cfg, hubert_dir, device)
    elif mode == "whisper":
        features_path = ds.paths.folder / "aud_whisper.npy"

        def compute() -> np.ndarray:  # rank 0 has them already (the speech SyncNet's input)
            if speech_feats is not None:
                return speech_feats
            return features.whisper_features_for(ds, speech, str(whisper_source))
    else:
        features_path = ds.paths.folder / "aud_ave.npy"
        if ave_weights is not None:
            encoder = syncnet.AudioEncoder()
            syncnet.load_ave_weights(encoder, ave_weights)
            source = Path(ave_weights)
        else:
            encoder, source = expert.audio_encoder, sync_path

        def compute() -> np.ndarray:
            return features.audio_features_for(ds, cfg, source, encoder, device)
    def variant_sets() -> np.ndarray | None:  # train.audio_variants, whisper mode only
        if not cfg.train.audio_variants:
            return None
        return np.stack([features.whisper_features_for(ds, speech, str(whisper_source), s)
                         for s in cfg.train.audio_variants])

    variants = None
    if rank == 0:  # one process computes and caches, the others then read the cache
        compute()
        variants = variant_sets()
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    feats = compute()
    if rank != 0:
        variants = variant_sets()
    use_sync = cfg.train.window > 1 and cfg.train.sync_weight > 0
    gen = train_generator(ds, cfg, out_dir, feats, expert=expert if use_sync else None,
                          steps=steps, resume=resume, device=device, progress=progress,
                          on_log=on_log, variants=variants)
    opinion = None
    if rank == 0:
        opinion = _second_opinion(ds, expert, cfg, speech_feats, device)
        for line in opinion.lines():
            log.info("%s", line)
    return PersonResult(sync_path, accuracy, features_path, gen, opinion)


def _second_opinion(ds: PreparedDataset, expert: SyncNet, cfg: Config,
                    speech_feats: np.ndarray | None, device: str | None) -> OffsetOpinion:
    """The trained SyncNet's offset of the held-out tail beside the recording check's
    (offset_opinion.py says what each can tell); syncnet_v2 too when its weights are here."""
    from . import syncnet_v2

    net_v2 = None
    try:
        net_v2 = syncnet_v2.load_syncnet_v2(device=device)
    except syncnet_v2.SyncNetV2WeightsError as exc:
        log.info("syncnet_v2 skipped: %s", exc)
    return offset_opinion.read_tail(ds, expert, cfg, speech_feats, net_v2, device=device)


@torch.no_grad()
def predict_patches(model: torch.nn.Module, patches: np.ndarray, audio_features: np.ndarray,
                    indices: np.ndarray, cfg: Config, reference: np.ndarray | None = None,
                    batch: int = 16) -> np.ndarray:
    """Generate the inner patches of `indices` from their own masked frames and audio.

    patches: (T, S, S, 3) uint8 RGB model-size patches; reference: (S, S, 3) uint8, e.g. the
    still frame inference uses (`infer.still_reference_index`); default: each frame is its own
    reference, as SyncTalk_2D infers, which lets the real mouth leak into the output. Returns (N, S, S, 3) uint8 RGB.
    """
    from . import crop

    device = next(model.parameters()).device
    model.eval()
    out = []
    x0, y0, x1, y1 = crop.mask_rect(cfg.crop, cfg.model.image_size)
    for start in range(0, len(indices), batch):
        idx = indices[start: start + batch]
        target = torch.from_numpy(np.stack([np.asarray(patches[i]) for i in idx]))
        target = target.permute(0, 3, 1, 2).float().div(255)
        ref = (target if reference is None else
               torch.from_numpy(reference).permute(2, 0, 1).float().div(255).expand_as(target))
        masked = target.clone()
        masked[:, :, y0:y1, x0:x1] = 0
        audio = torch.from_numpy(np.stack([data.feature_window(audio_features, int(i))
                                           for i in idx]))
        pred = model(torch.cat([ref, masked], 1).to(device),
                     unet.audio_window_to_input(audio.float().to(device), cfg.model.audio_mode))
        out.append((pred.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(out)
