"""The voice report: does a trained person's mouth follow voices that are not their own?

A person is driven by many voices (the server's text-to-speech, a colleague, another
language). Each driving audio is rendered and the output is measured from landmarks found on
its own frames, with nothing the generator saw in training as the judge:

- **spread**: p95 - p5 of the mouth opening (inner-lip gap / face width) over speech frames,
  relative to the person's own real talking (`ratio_real`) and to the same model driven by
  the person's own held-out audio (`ratio_own`: voice generality, apart from how much the
  model moves the mouth at all);
- **envelope r and lag**: correlation of the mouth opening with the audio's loudness envelope
  (`evaluate.envelope_sync`: both detrended, best lag within ±10 frames; > 0: the mouth runs
  late): a voice-general test of sync that needs no network. It is weak on real footage too
  (r 0.25-0.33 on the shared 20-60 s clips), so read it against the real held-out row;
- **pause opening**: median opening over pause frames, against the person's own closed mouth
  (p10 of the real opening in the recording).

The real held-out tail, measured the same way from the recording's landmarks, is the first
row: what real speech scores. `voice_report` writes outputs/<name>/eval/voices.json and
voices.png; `measure` scores any frames and audio, so a real clip scores ratio 1 against
itself and a still video about 0.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import evaluate, files, landmarks, media
from .config import Config
from .progress import progress_bar

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .dataset import PreparedDataset
    from .infer import Avatar

log = logging.getLogger(__name__)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# the shared sample clips that are not English (../shared/data/README.md)
SHARED_LANGUAGES = {"real_talk_d": "fr", "real_talk_f": "de"}
# espeak-ng at three pitches: low, the voice's own, high
ESPEAK_PITCHES = {"espeak low": 15, "espeak mid": 50, "espeak high": 90}
ESPEAK_TEXT = ("The weather report for tomorrow says the morning will be cool and bright. "
               "By noon a light wind brings a few clouds from the west, and in the evening "
               "there may be some rain along the coast. Pack an umbrella, just in case, and "
               "enjoy the weekend.")
REPORT_FILE = "voices.json"


@dataclass
class Voice:
    """One driving audio: (N,) float32 16 kHz mono."""

    name: str
    wav: np.ndarray
    language: str = "en"
    own: bool = False  # the person's own held-out audio (the comparison row)


@dataclass
class Reference:
    """The person's own real talking: what a voice's mouth motion is compared with."""

    spread: float  # p95 - p5 of the real opening over speech frames (face widths)
    closed: float  # p10 of the real opening: the person's closed mouth


@dataclass
class VoiceScore:
    name: str
    language: str
    seconds: float
    frames: int
    speech_frames: int
    spread: float  # face widths
    ratio_real: float  # spread / the person's real spread
    envelope_r: float  # at the best lag
    lag: int  # frames; > 0: the mouth runs late
    pause_frames: int
    pause_opening: float  # median opening in pauses (face widths)
    closed: float  # the person's closed mouth (face widths), for comparison
    ratio_own: float = float("nan")  # spread / the spread with the person's own audio
    own: bool = False
    opening: list[float] = field(default_factory=list, repr=False)  # per frame, for plots


def speech_and_pauses(wav: np.ndarray, n_frames: int, cfg: Config
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(speech, pause) bool masks per frame: pauses are the evaluation's silent frames (with
    their margin, so closing lips do not count); speech is every frame not silent at all."""
    return (evaluate.speech_frames(wav, n_frames, cfg),
            evaluate.silent_frames(wav, n_frames, cfg))


def reference_of(ds: PreparedDataset, cfg: Config | None = None) -> Reference:
    """The person's real spread in speech and closed mouth, from the whole recording's
    landmarks (preprocessing found them on the real frames)."""
    cfg = cfg or ds.config
    opening = landmarks.mouth_opening(ds.points(), ds.scheme).astype(np.float64)
    speech, _ = speech_and_pauses(ds.wav(), ds.n_frames, cfg)
    return Reference(evaluate.opening_spread(opening, speech),
                     float(np.nanpercentile(opening, 10)))


def measure(opening: np.ndarray, wav: np.ndarray, reference: Reference, cfg: Config,
            name: str = "clip", language: str = "en", own: bool = False) -> VoiceScore:
    """Score one clip from its per-frame mouth opening (landmarks on its own frames) and the
    audio that drove it."""
    opening = np.asarray(opening, np.float64)
    n = len(opening)
    speech, pause = speech_and_pauses(wav, n, cfg)
    spread = evaluate.opening_spread(opening, speech)
    corr = evaluate.envelope_sync(opening, wav, cfg)
    pauses = opening[pause & np.isfinite(opening)]
    return VoiceScore(
        name=name, language=language, seconds=len(wav) / cfg.media.sample_rate, frames=n,
        speech_frames=int(speech.sum()), spread=spread,
        ratio_real=spread / reference.spread if reference.spread > 0 else float("nan"),
        envelope_r=float(corr.best_r), lag=int(corr.best_lag), pause_frames=len(pauses),
        pause_opening=float(np.median(pauses)) if len(pauses) else float("nan"),
        closed=reference.closed, own=own, opening=[float(v) for v in opening])


def measure_frames(frames: Iterable[np.ndarray], wav: np.ndarray, reference: Reference,
                   cfg: Config, progress: bool = False, **kw) -> VoiceScore:
    """`measure` of any frames (an iterable of (H, W, 3) uint8 RGB): landmarks found anew."""
    track = evaluate.track_faces(frames, cfg, progress)
    return measure(landmarks.mouth_opening(track.points, track.scheme), wav, reference, cfg,
                   **kw)


# ---------------------------------------------------------------------------- voices


def _clip_seconds(wav: np.ndarray, seconds: float | None, sample_rate: int) -> np.ndarray:
    return wav if not seconds else wav[: round(seconds * sample_rate)]


def default_voices(ds: PreparedDataset, cfg: Config | None = None,
                   shared: str | os.PathLike | None = "auto", seconds: float | None = 20.0,
                   exclude: Iterable[str] = (), espeak: bool = True) -> list[Voice]:
    """The person's own held-out audio, the voices of the shared sample clips (those in
    `shared`, if present: "auto" = ../shared/data beside the repository; `exclude` names,
    e.g. the person's own clip), the two shared speech files and espeak-ng at three pitches,
    each cut to `seconds`."""
    cfg = cfg or ds.config
    sr = cfg.media.sample_rate
    start, stop = evaluate.heldout_range(ds, cfg)
    hop = sr // cfg.media.fps
    voices = [Voice("own held-out", np.asarray(ds.wav()[start * hop: stop * hop], np.float32),
                    language="", own=True)]  # the person's language: not known here
    skip = set(exclude)
    folder = SHARED_DATA if shared == "auto" else Path(shared) if shared else None
    if folder is not None and folder.is_dir():
        for path in sorted(folder.glob("real_talk_*.mp4")) + sorted(folder.glob("speech_*.wav")):
            if path.stem in skip:
                continue
            wav = _clip_seconds(media.load_audio(path, sr), seconds, sr)
            voices.append(Voice(path.stem, wav, SHARED_LANGUAGES.get(path.stem, "en")))
    if espeak:
        from . import tts

        for name, pitch in ESPEAK_PITCHES.items():
            speech = tts.synthesize(ESPEAK_TEXT, voice="en-us", pitch=pitch, sample_rate=sr)
            voices.append(Voice(name, _clip_seconds(speech.audio, seconds, sr)))
    return voices


def render_and_measure(avatar: Avatar, voice: Voice, reference: Reference,
                       progress: bool = False) -> VoiceScore:
    """Render one voice with the avatar (bouncing templates, as a user's render) and score
    the frames as they come, without keeping them."""
    def frames():
        yield from avatar.frames(np.asarray(voice.wav, np.float32))

    return measure_frames(frames(), voice.wav, reference, avatar.cfg, progress,
                          name=voice.name, language=voice.language, own=voice.own)


def voice_report(avatar: Avatar, voices: list[Voice] | None = None,
                 output_root: str | os.PathLike = "outputs", progress: bool = True,
                 **default_kw) -> dict[str, Any]:
    """Render and score each voice (default: `default_voices`); writes
    outputs/<name>/eval/voices.json and voices.png; returns the report."""
    ds, cfg = avatar.dataset, avatar.cfg
    voices = voices if voices is not None else default_voices(ds, cfg, **default_kw)
    reference = reference_of(ds, cfg)
    scores = []
    bar = progress_bar(voices, desc="voices", unit="voice", enabled=progress)
    for voice in bar:
        scores.append(render_and_measure(avatar, voice, reference))
        log.info("%s: spread %.3f (%.0f %% of real), envelope r %.2f at lag %+d, pause %.3f",
                 voice.name, scores[-1].spread, 100 * scores[-1].ratio_real,
                 scores[-1].envelope_r, scores[-1].lag, scores[-1].pause_opening)
    start, stop = evaluate.heldout_range(ds, cfg)
    hop = cfg.media.sample_rate // cfg.media.fps
    real = measure(landmarks.mouth_opening(ds.points()[start:stop], ds.scheme),
                   ds.wav()[start * hop: stop * hop], reference, cfg, name="real held-out",
                   language="")
    own = next((s for s in scores if s.own), None)
    for s in scores:
        if own is not None and own.spread > 0:
            s.ratio_own = s.spread / own.spread
    speech = getattr(avatar.speech, "name", None)
    report = {"name": avatar.name, "checkpoint": avatar.checkpoint.name,
              "audio_mode": cfg.model.audio_mode, "preset": cfg.preset, "speech_model": speech,
              "reference": asdict(reference), "real": asdict(real),
              "voices": [asdict(s) for s in scores]}
    folder = Path(output_root) / avatar.name / "eval"
    files.save_json(folder / REPORT_FILE, evaluate._json_ready(report))
    fig = plot_voice_report(report)
    with files.atomic_path(folder / "voices.png") as tmp:
        fig.savefig(tmp, dpi=110)
    return report


# ---------------------------------------------------------------------------- output


COLUMNS = ("voice", "lang", "spread", "% real", "% own", "env r", "lag", "pause", "closed")


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for v in report["voices"]:
        rows.append([v["name"], v["language"] or "-", f"{v['spread']:.3f}",
                     f"{100 * v['ratio_real']:.0f}", f"{100 * v['ratio_own']:.0f}",
                     f"{v['envelope_r']:.2f}", f"{v['lag']:+d}", f"{v['pause_opening']:.3f}",
                     f"{v['closed']:.3f}"])
    return rows


def format_table(report: dict[str, Any]) -> str:
    """The report as a fixed-width text table (spread and openings in face widths)."""
    real = dict(report["real"], ratio_own=float("nan"))
    rows = [list(COLUMNS), *table_rows({"voices": [real]}), *table_rows(report)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                       enumerate(zip(row, widths, strict=True))) for row in rows]
    head = (f"{report['name']} ({report['audio_mode']}, {report['checkpoint']}): real spread "
            f"{report['reference']['spread']:.3f}, closed mouth {report['reference']['closed']:.3f}")
    return "\n".join([head, *lines])


def plot_voice_report(report: dict[str, Any]) -> Figure:
    """Spread against the real and the own-voice spread, envelope r with its lag, and the
    pause opening against the person's closed mouth, one bar per voice."""
    from matplotlib.figure import Figure

    voices = report["voices"]
    names = [v["name"] for v in voices]
    y = np.arange(len(names))
    fig = Figure(figsize=(12, 0.45 * len(names) + 1.6), layout="constrained")
    ax_s, ax_r, ax_p = fig.subplots(1, 3, sharey=True)
    colours = ["C2" if v["own"] else "C0" for v in voices]
    ax_s.barh(y, [100 * v["ratio_real"] for v in voices], color=colours)
    own = next((v for v in voices if v["own"]), None)
    if own is not None:
        ax_s.axvline(100 * own["ratio_real"], color="C2", ls=":", lw=1,
                     label="own voice")
        ax_s.axvline(85 * own["ratio_real"], color="grey", ls="--", lw=0.8,
                     label="85 % of own")
        ax_s.legend(loc="lower right", fontsize=8)
    ax_s.axvline(100, color="k", lw=0.8)
    ax_s.set(yticks=y, yticklabels=names, xlabel="% of the real spread",
             title="mouth-opening spread in speech")
    ax_s.invert_yaxis()
    ax_r.barh(y, [v["envelope_r"] for v in voices], color=colours)
    for yi, v in zip(y, voices, strict=True):
        ax_r.text(max(v["envelope_r"], 0) + 0.01, yi, f"lag {v['lag']:+d}", va="center",
                  fontsize=8)
    if "real" in report:
        ax_r.axvline(report["real"]["envelope_r"], color="k", lw=0.8, label="real held-out")
        ax_r.legend(loc="lower right", fontsize=8)
    ax_r.set(xlim=(min(0, *(v["envelope_r"] for v in voices)) - 0.05, 1.0),
             xlabel="r (best lag)", title="opening vs speech envelope")
    ax_p.barh(y, [v["pause_opening"] for v in voices], color=colours)
    ax_p.axvline(report["reference"]["closed"], color="k", lw=0.8, label="closed (real p10)")
    ax_p.set(xlabel="face widths", title="mouth opening in pauses")
    ax_p.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{report['name']}: voice report ({report['audio_mode']}, "
                 f"{report['checkpoint']})")
    return fig
