"""The sound's offset as the recording check measured and corrected it, beside what a trained
SyncNet reads on the held-out tail: a second opinion a user sees after training and in
`evaluate`.

What each reading can say (docs/recording_check.md, "Second opinion from SyncNet"):

- The recording check (`av_offset`, during preprocessing) measures the recorded sound
  against the landmarks' mouth over the whole clip; preprocessing shifts aud.wav by
  `applied` frames.
- The person's SyncNet learns frame t with the sound of frame t of that corrected aud.wav,
  so on its training frames it reads 0 by construction, whatever the recording's real
  offset. On the held-out tail, never trained on, 0 (±1) says the correction still fits the
  end of the clip; anything else says it does not hold across the clip: the sound drifts
  against the picture, or aud.wav was shifted after training. It cannot find an offset that
  is the same over the whole clip.
- syncnet_v2 (syncnet_python's network, trained on other people; weights not shipped) is an
  independent judge of the absolute offset: on the corrected tail it should read what the
  check says is left, `measured - applied`.

Offsets are in video frames, > 0 when the sound is late (the sign of `syncnet.sync_offset`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .config import Config
    from .dataset import PreparedDataset
    from .syncnet import SyncNet
    from .syncnet_v2 import SyncNetV2

IN_SYNC = 1  # frames: ±1 is within what any of the readings resolves


@dataclass(frozen=True)
class SyncReading:
    """One network's offset of the held-out tail: frames (> 0: sound late) and its
    confidence (median minus minimum mean distance over shifts, the network's own scale)."""

    offset: int
    confidence: float


@dataclass(frozen=True)
class OffsetOpinion:
    """The recording check's offset and the networks' readings of the held-out tail.

    measured / confidence: the check's estimate of the recorded sound (None: not measured,
    e.g. no lip landmarks or a dataset older than the check); applied: frames preprocessing
    shifted the sound earlier (media.av_offset); tail: held-out frames [start, stop);
    syncnet: the person's SyncNet on the tail (None: no held-out tail); syncnet_v2: the
    independent network (None: `v2_missing` says why); min_frames: a tail shorter than this
    is read but not judged (check.sync_min_s: on a 1-2 s tail a 10-step SyncNet read +11).
    """

    measured: int | None
    confidence: float | None
    applied: int
    setting: str
    tail: tuple[int, int]
    syncnet: SyncReading | None
    syncnet_v2: SyncReading | None = None
    v2_missing: str = "not available (no weights; see docs/evaluation.md)"
    min_frames: int = 0

    @property
    def short(self) -> bool:
        """The tail is too short for a verdict: its readings are shown, not judged."""
        return self.tail[1] - self.tail[0] < self.min_frames

    @property
    def left(self) -> int:
        """What the check says is left in aud.wav after the shift (0 when not measured)."""
        return 0 if self.measured is None else self.measured - self.applied

    @property
    def holds(self) -> bool | None:
        """The person's SyncNet reads the tail in sync: the correction holds to the end."""
        if self.syncnet is None or self.short:
            return None
        return abs(self.syncnet.offset) <= IN_SYNC

    @property
    def v2_agrees(self) -> bool | None:
        """syncnet_v2 reads on the tail what the check says is left (±1)."""
        if self.syncnet_v2 is None or self.short:
            return None
        return abs(self.syncnet_v2.offset - self.left) <= IN_SYNC

    def lines(self) -> list[str]:
        """The opinions in plain words, one per reading."""
        if self.measured is None:
            check = f"recording check not measured, {self.applied:+d} applied"
        else:
            conf = "" if self.confidence is None else f", confidence {self.confidence:.1f}"
            check = (f"recording check {self.measured:+d} frames{conf}, "
                     + (f"{self.applied:+d} applied" if self.applied else "none applied")
                     + f" (media.av_offset={self.setting})")
        start, stop = self.tail
        where = f"SyncNet on the held-out tail (frames {start}-{stop})"
        if self.syncnet is None:
            out = [f"audio offset: {check}; no held-out tail, so no SyncNet reading"]
        else:
            s = self.syncnet
            late = "late" if s.offset > 0 else "early"
            verdict = (f"too short to judge (under {self.min_frames} frames)" if self.short
                       else "the correction holds to the end of the clip" if self.holds else
                       f"the correction does not hold across the clip: on the tail the sound "
                       f"is {abs(s.offset)} frames {late} against what SyncNet learned (the "
                       "sound drifts, or aud.wav was shifted after training; see the check's "
                       "windows and drift)")
            line = (f"audio offset: {check}; {where} {s.offset:+d} "
                    f"(confidence {s.confidence:.2f}): {verdict}")
            out = [line]
        if self.syncnet_v2 is None:
            out.append(f"syncnet_v2: {self.v2_missing}")
        else:
            v = self.syncnet_v2
            verdict = ("too short to judge" if self.short else
                       "agrees with the check" if self.v2_agrees else
                       f"disagrees: the check leaves {self.left:+d}")
            out.append(f"syncnet_v2 on the held-out tail: {v.offset:+d} "
                       f"(confidence {v.confidence:.2f}), {verdict}")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the verdicts."""
        out = asdict(self)
        out.update(tail=list(self.tail), left=self.left, short=self.short, holds=self.holds,
                   v2_agrees=self.v2_agrees)
        return out


def from_meta(meta: dict[str, Any] | None, tail: tuple[int, int], own: SyncReading | None,
              v2: SyncReading | None = None, v2_missing: str | None = None,
              min_frames: int = 0) -> OffsetOpinion:
    """The opinion from a dataset's meta.json (its `av_offset` record) and the readings."""
    record = (meta or {}).get("av_offset") or {}
    measured = record.get("measured")
    confidence = record.get("confidence")
    extra = {} if v2_missing is None else {"v2_missing": v2_missing}
    return OffsetOpinion(
        measured=None if measured is None else int(measured),
        confidence=None if confidence is None else float(confidence),
        applied=int(record.get("applied") or 0), setting=str(record.get("setting", "0")),
        tail=(int(tail[0]), int(tail[1])), syncnet=own, syncnet_v2=v2, min_frames=min_frames,
        **extra)


def read_tail(ds: PreparedDataset, net: SyncNet, cfg: Config,
              features: np.ndarray | None = None, net_v2: SyncNetV2 | None = None,
              v2_missing: str | None = None, device: str | None = None,
              progress: bool = False) -> OffsetOpinion:
    """Read the held-out tail (`train.heldout_fraction`) with the person's SyncNet (and
    syncnet_v2 when given) and set it beside the check's offset from meta.json.

    features: (T, F) the speech features a speech SyncNet hears (None for a mel SyncNet).
    A few seconds of embedding on a CPU for a 30 s tail; syncnet_v2 also decodes the tail.
    """
    from . import data, evaluate, syncnet

    split = data.split_frames(ds.n_frames, cfg.train.heldout_fraction, cfg.train.val_fraction)
    if len(split.heldout) < 2 * net.cfg.n_frames:
        return from_meta(ds.meta, (ds.n_frames, ds.n_frames), None, None, v2_missing,
                         min_tail_frames(cfg))
    start, stop = int(split.heldout[0]), int(split.heldout[-1]) + 1
    found = syncnet.dataset_offset(net, ds, start, stop, evaluate.MAX_SHIFT, device,
                                   features if net.speech else None)
    own = SyncReading(found.offset, found.confidence)
    v2 = None
    if net_v2 is not None:
        clip = evaluate.dataset_clip(ds, start, stop, face_crops=True, progress=progress)
        assert clip.face_crops is not None
        score = evaluate.syncnet_v2_sync(net_v2, clip.face_crops, clip.audio, clip.fps,
                                         clip.cfg.media.sample_rate, progress=progress)
        v2 = SyncReading(score.offset, score.confidence)
    return from_meta(ds.meta, (start, stop), own, v2, v2_missing, min_tail_frames(cfg))


def min_tail_frames(cfg: Config) -> int:
    """The shortest tail judged: the check's own least stretch (check.sync_min_s)."""
    return round(cfg.check.sync_min_s * cfg.media.fps)


__all__ = ["IN_SYNC", "OffsetOpinion", "SyncReading", "from_meta", "min_tail_frames",
           "read_tail"]
