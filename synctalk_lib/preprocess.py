"""Preprocessing: a person's recording → everything training and inference need, cached.

Input is `dataset/<name>/<name>.mp4` (any container, codec or frame rate; resampled to 25 fps)
or an existing SyncTalk_2D folder (`full_body_img/` + `landmarks/` + `aud.wav`). Output, beside
it (docs/design.md §1):

    aud.wav                16 kHz mono PCM, shifted against the picture by media.av_offset
    landmarks/N.lms        per-frame landmarks, readable by SyncTalk_2D-era tools
    aud_mel.npy            (T, 80, 16) float32 mel window per video frame
    cache/points.npy       (T, N, 2) float32 landmarks, missing frames filled from neighbours
    cache/found.npy        (T,) bool, a face was detected in that frame
    cache/boxes.npy        (T, 4) float32 smoothed square crop boxes (boxes_raw.npy unsmoothed)
    cache/crops_328.npy    (T, 328, 328, 3) uint8 RGB crops (memory-mapped when read)
    cache/mel.npy          (T_mel, 80) float32 mel spectrogram, 80 frames per second
    cache/check.json       the recording check
    cache/meta.json        source info, per-stage cache keys and timings, `complete`, and
                           `av_offset`: the sound's measured offset and the shift applied

Each stage is keyed on its inputs and settings; re-running skips stages whose key is unchanged.
Frames are streamed twice (landmarks, then crops) instead of held in memory.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from . import audio, av_offset, check, crop, files, landmarks, media
from .config import Config, get_config
from .dataset import (  # noqa: F401  load_dataset: for docs/ that call preprocess.load_dataset
    DatasetPaths,
    PreparedDataset,
    PreprocessError,
    load_dataset,
)
from .progress import progress_bar
from .source import FrameSource, ImageFolderFrames, VideoFrames

log = logging.getLogger(__name__)

# bump when a stage's output format or algorithm changes, so old caches are recomputed
PIPELINE_VERSION = 1


# ---------------------------------------------------------------- the pipeline

def preprocess(
    name: str,
    root: str | Path = "dataset",
    cfg: Config | None = None,
    video: str | Path | None = None,
    source: str = "auto",
    force: bool = False,
    progress: bool = True,
) -> PreparedDataset:
    """Preprocess `dataset/<name>/` (see the module docstring for what is written).

    Args:
        name: the person's dataset name (folder under `root`).
        video: a recording anywhere on disk; copied to `root/name/name.<ext>` first.
        source: "auto" (the video if there is one, else `full_body_img/`), "video" or "frames".
        force: recompute every stage even when its cache key matches.
    """
    cfg = cfg or get_config()
    paths = DatasetPaths.of(name, root)
    if video is not None:
        _adopt_video(Path(video), paths)
    if not paths.folder.is_dir():
        raise PreprocessError(
            f"no dataset folder {paths.folder}; put the recording at "
            f"{paths.folder / (name + '.mp4')} or pass video=<path>"
        )
    frames, source_info, audio_path = _open_source(paths, source, cfg)
    old = _read_meta(paths)
    meta: dict[str, Any] = {
        "name": name, "version": PIPELINE_VERSION, "fps": cfg.media.fps,
        "sample_rate": cfg.media.sample_rate, "n_frames": len(frames),
        "width": frames.width, "height": frames.height, "source": source_info,
        "config": cfg.to_dict(), "stages": {}, "timings": {}, "complete": False,
    }
    stages: list[tuple[str, dict[str, Any], Callable[[], dict[str, Any]]]] = [
        ("landmarks", {"src": source_info["digest"], "cfg": cfg.landmarks, "fps": cfg.media.fps},
         lambda: _landmark_stage(frames, paths, cfg, progress)),
        ("crops", {"cfg": cfg.crop},
         lambda: _crop_stage(frames, paths, cfg, progress)),
        ("audio", {"src": source_info["audio_digest"], "sr": cfg.media.sample_rate,
                   "av_offset": cfg.media.av_offset,
                   "sync": {k: v for k, v in asdict(cfg.check).items()
                            if k.startswith("sync_")}},
         lambda: _audio_stage(audio_path, paths, cfg)),
        ("mel", {"cfg": cfg.audio, "n": len(frames)},
         lambda: _mel_stage(paths, cfg, len(frames))),
        ("check", {"cfg": cfg.check},
         lambda: _check_stage(paths, cfg, meta)),
    ]
    upstream = f"v{PIPELINE_VERSION}"
    for stage, inputs, run in stages:
        key = files.digest_of({"up": upstream, **inputs})
        upstream = key  # a stage's key covers everything before it
        done = old.get("stages", {}).get(stage)
        if not force and done == key and stage in old.get("results", {}):
            meta["stages"][stage] = key
            meta.setdefault("results", {})[stage] = old["results"][stage]
            meta["timings"][stage] = old.get("timings", {}).get(stage)
            log.info("%s: cached (key %s)", stage, key)
            continue
        t0 = time.perf_counter()
        result = run()
        meta["timings"][stage] = round(time.perf_counter() - t0, 3)
        meta["stages"][stage] = key
        meta.setdefault("results", {})[stage] = result
        files.save_json(paths.meta, meta)
        log.info("%s: done in %.1f s", stage, meta["timings"][stage])
    meta["scheme"] = meta["results"]["landmarks"]["scheme"]
    meta["crops_file"] = meta["results"]["crops"]["file"]
    meta["av_offset"] = meta["results"]["audio"].get("av_offset")
    meta["complete"] = True
    files.save_json(paths.meta, meta)
    return PreparedDataset(paths, meta)


def _adopt_video(video: Path, paths: DatasetPaths) -> None:
    """Copy a recording into the dataset folder under the name SyncTalk_2D users expect."""
    if not video.is_file():
        raise PreprocessError(f"no such video: {video}; check the path")
    target = paths.folder / f"{paths.name}{video.suffix.lower()}"
    if target.resolve() == video.resolve():
        return
    existing = paths.find_video()
    if existing is not None:
        if files.file_digest(existing) == files.file_digest(video):
            return
        raise PreprocessError(
            f"{existing} already exists and differs from {video}; choose another name or "
            "delete the old dataset folder"
        )
    with files.atomic_path(target) as tmp:
        shutil.copyfile(video, tmp)


def _open_source(
    paths: DatasetPaths, source: str, cfg: Config
) -> tuple[FrameSource, dict[str, Any], Path]:
    """Validate the input and return (frames, description, audio file)."""
    video = paths.find_video()
    use_folder = source == "frames" or (source == "auto" and video is None)
    if source not in ("auto", "video", "frames"):
        raise PreprocessError(f"source must be 'auto', 'video' or 'frames', not {source!r}")
    if use_folder:
        if not paths.full_body_img.is_dir():
            raise PreprocessError(
                f"nothing to preprocess in {paths.folder}: expected {paths.name}.mp4 (or "
                "another video format) or a SyncTalk_2D full_body_img/ folder"
            )
        frames: FrameSource = ImageFolderFrames.open(paths.full_body_img)
        audio_path = paths.aud_wav if paths.aud_wav.is_file() else video
        if audio_path is None:
            raise PreprocessError(
                f"{paths.full_body_img} has no audio beside it: add aud.wav (16 kHz) or the "
                "original video to the folder"
            )
        digest = files.digest_of([(p.name, p.stat().st_size, p.stat().st_mtime_ns)
                                  for p in frames.files])
        lms = sorted(paths.landmarks_dir.glob("*.lms")) if paths.landmarks_dir.is_dir() else []
        info = {"kind": "frames", "file": "full_body_img", "digest": digest,
                "landmark_files": len(lms)}
    else:
        if video is None:
            raise PreprocessError(
                f"no video in {paths.folder}: expected {paths.name}.mp4 (or .mov/.mkv/…)"
            )
        try:
            minfo = media.probe(video)
        except media.MediaError as exc:
            raise PreprocessError(str(exc)) from exc
        if not minfo.has_video:
            raise PreprocessError(f"{video} has no video stream; give a recording of the face")
        if not minfo.has_audio:
            raise PreprocessError(
                f"{video} has no audio track; lip-sync training needs the person's voice. "
                "Record with sound, or mux it in: ffmpeg -i video -i voice.wav -c:v copy out.mp4"
            )
        try:
            frames = VideoFrames.open(video, cfg.media.fps)
        except media.MediaError as exc:
            raise PreprocessError(str(exc)) from exc
        audio_path = video
        digest = files.file_digest(video)
        info = {"kind": "video", "file": video.name, "digest": digest,
                "duration": minfo.duration, "source_fps": minfo.fps,
                "video_codec": minfo.video_codec, "audio_codec": minfo.audio_codec}
    recorded = paths.cached("aud_recorded.wav")  # a folder's aud.wav before it was shifted
    info["audio_digest"] = (info["digest"] if audio_path == video
                            else files.file_digest(recorded if audio_path == paths.aud_wav
                                                   and recorded.is_file() else audio_path))
    return frames, info, audio_path


def _landmark_stage(
    frames: FrameSource, paths: DatasetPaths, cfg: Config, progress: bool
) -> dict[str, Any]:
    """Detect (or read) landmarks for every frame, fill gaps, write `.lms` files."""
    existing = _existing_lms(frames, paths)
    if existing is not None:
        points, scheme = existing
        found = np.ones(len(frames), bool)
    else:
        points, found, scheme = _detect_all(frames, cfg, progress)
    n = len(found)
    n_found = int(found.sum())
    if n_found == 0:
        raise PreprocessError(
            "no face found in any frame; the recording must show one face toward the camera "
            "(check the video plays, is not black, and the face is not tiny or cut off)"
        )
    missing_share = 1 - n_found / n
    if missing_share > cfg.landmarks.max_missing_fraction:
        first = int(np.flatnonzero(~found)[0])
        raise PreprocessError(
            f"a face was found in only {n_found} of {n} frames ({100 * (1 - missing_share):.0f}%; "
            f"the limit is {100 * (1 - cfg.landmarks.max_missing_fraction):.0f}%), first miss "
            f"at {first / cfg.media.fps:.1f} s. Trim the video to the part where the face is "
            "visible, or raise landmarks.max_missing_fraction"
        )
    points = landmarks.fill_missing(points, found)
    if existing is None:
        with files.atomic_dir(paths.landmarks_dir) as tmp:
            for i in range(n):
                landmarks.write_lms(tmp / f"{i}.lms", points[i], scheme)
    files.save_npy(paths.cached("points.npy"), points)
    files.save_npy(paths.cached("found.npy"), found)
    if n_found < n:
        log.warning("no face in %d of %d frames; filled from neighbouring frames", n - n_found, n)
    return {"scheme": scheme.name, "frames_without_face": n - n_found,
            "missing_ranges": check.true_runs(~found)[:50].tolist(),
            "from_lms_files": existing is not None,
            # what `auto` stood for on this machine (facemesh and mediapipe agree to ~0.01 %
            # of the face width, docs/landmarks.md, so the cache key does not include it)
            "backend": None if existing else landmarks.resolve_backend(cfg.landmarks.backend)}


def _existing_lms(
    frames: FrameSource, paths: DatasetPaths
) -> tuple[np.ndarray, landmarks.Scheme] | None:
    """SyncTalk_2D folders come with landmarks: use them when there is one per frame."""
    if not isinstance(frames, ImageFolderFrames) or not paths.landmarks_dir.is_dir():
        return None
    files_ = [paths.landmarks_dir / f"{i}.lms" for i in range(len(frames))]
    if not all(f.is_file() for f in files_):
        log.info("landmarks/ incomplete: detecting landmarks instead")
        return None
    read = [landmarks.read_lms(f) for f in files_]
    scheme = read[0][1]
    return np.stack([pts for pts, _ in read]).astype(np.float32), scheme


def _detect_all(
    frames: FrameSource, cfg: Config, progress: bool
) -> tuple[np.ndarray, np.ndarray, landmarks.Scheme]:
    detector = landmarks.make_detector(cfg.landmarks, video=True)
    scheme = detector.scheme
    n = len(frames)
    points = np.full((n, scheme.n_points, 2), np.nan, np.float32)
    found = np.zeros(n, bool)
    try:
        bar = progress_bar(frames.iter_frames(), total=n, desc="landmarks", unit="frame",
                           enabled=progress)
        for i, frame in enumerate(bar):
            if i >= n:
                break
            pts = detector(frame)
            if pts is not None:
                points[i], found[i] = pts, True
    finally:
        detector.close()
    return points, found, scheme


def _crop_stage(
    frames: FrameSource, paths: DatasetPaths, cfg: Config, progress: bool
) -> dict[str, Any]:
    points = np.load(paths.cached("points.npy"))
    scheme = landmarks.scheme_for(points.shape[1])
    raw = crop.boxes_from_landmarks(points, scheme)
    boxes = crop.smooth_boxes(raw, cfg.crop.smooth_frames)
    n, size = len(boxes), cfg.crop.size
    name = f"crops_{size}.npy"
    with files.atomic_path(paths.cached(name)) as tmp:
        crops = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                          shape=(n, size, size, 3))
        bar = progress_bar(frames.iter_frames(), total=n, desc="crops", unit="frame",
                           enabled=progress)
        count = 0
        for i, frame in enumerate(bar):
            if i >= n:
                break
            crops[i] = crop.crop_face(frame, boxes[i], size)
            count += 1
        crops.flush()
        del crops
        if count != n:
            raise PreprocessError(f"the video gave {count} frames on the second pass, "
                                  f"expected {n}; the file may be damaged or still being written")
    files.save_npy(paths.cached("boxes_raw.npy"), raw)
    files.save_npy(paths.cached("boxes.npy"), boxes)
    side = boxes[:, 2] - boxes[:, 0]
    jump = np.abs(np.diff(boxes, axis=0)).max(axis=1) / side[1:] if n > 1 else np.zeros(1)
    return {"file": name, "median_box_px": float(np.median(side)),
            "max_jump_fraction": float(jump.max())}


def _audio_stage(audio_path: Path, paths: DatasetPaths, cfg: Config) -> dict[str, Any]:
    """Decode the sound to aud.wav, shifted into sync with the picture (media.av_offset).

    Every later reader (mel windows, Whisper and HuBERT features, evaluation) takes aud.wav,
    so shifting it here corrects them all. A SyncTalk_2D folder's own aud.wav is kept as
    cache/aud_recorded.wav before its first shift, so re-running never shifts twice.
    """
    try:
        setting = av_offset.parse_setting(cfg.media.av_offset)
    except ValueError as exc:
        raise PreprocessError(str(exc)) from exc
    source = Path(audio_path)
    recorded = paths.cached("aud_recorded.wav")
    in_place = paths.aud_wav.resolve() == source.resolve()
    if in_place and recorded.is_file():
        source = recorded
    try:
        wav = media.load_audio(source, cfg.media.sample_rate)
    except media.MediaError as exc:
        raise PreprocessError(str(exc)) from exc
    measured = _measure_offset(paths, wav, cfg)
    shift = setting if setting is not None else (
        av_offset.correction(measured, "auto", cfg.check) if measured is not None else 0)
    if shift:
        log.info("the sound is %+d frames against the picture: shifting it %d frames %s "
                 "(media.av_offset=%s)", shift, abs(shift), "earlier" if shift > 0 else "later",
                 cfg.media.av_offset)
        if in_place and not recorded.is_file():
            shutil.copyfile(paths.aud_wav, recorded)
        wav = av_offset.shift_audio(wav, -shift, cfg.media)
    if shift or not in_place or source == recorded:
        media.save_wav(paths.aud_wav, wav, cfg.media.sample_rate)
    summary = {"setting": cfg.media.av_offset, "applied": int(shift),
               "measured": None if measured is None else measured.whole.offset,
               "confidence": None if measured is None else measured.to_dict()["whole"]["confidence"],
               "halves": [] if measured is None else [h.offset for h in measured.halves],
               "convention": "frames, > 0 = the recorded sound is late; applied = the sound "
                             "was moved that many frames earlier"}
    return {"samples": len(wav), "seconds": len(wav) / cfg.media.sample_rate,
            "peak": float(np.abs(wav).max()) if len(wav) else 0.0, "av_offset": summary}


def _measure_offset(paths: DatasetPaths, wav: np.ndarray,
                    cfg: Config) -> av_offset.OffsetReport | None:
    """The offset of the recorded sound against the landmarks' mouth; None without lips."""
    points = np.load(paths.cached("points.npy"))
    scheme = landmarks.scheme_for(points.shape[1])
    if not scheme.has_mouth:
        return None
    opening = landmarks.mouth_opening(points, scheme)
    found = np.load(paths.cached("found.npy"))
    return av_offset.measure_offset(opening, wav, cfg.check, cfg.media, found)


def _mel_stage(paths: DatasetPaths, cfg: Config, n_frames: int) -> dict[str, Any]:
    wav = media.load_audio(paths.aud_wav, cfg.media.sample_rate)
    mel = audio.melspectrogram(wav, cfg.audio, cfg.media.sample_rate)
    windows = audio.frame_mel_windows(mel, n_frames, cfg.audio, cfg.media)
    files.save_npy(paths.cached("mel.npy"), mel)
    files.save_npy(paths.aud_mel, windows)
    audio_frames = audio.n_video_frames(len(wav), cfg.media)
    if abs(audio_frames - n_frames) > 2:
        log.warning("audio covers %d frames but the video has %d; features were clamped",
                    audio_frames, n_frames)
    return {"mel_frames": int(mel.shape[0]), "audio_frames": audio_frames}


def _check_stage(paths: DatasetPaths, cfg: Config, meta: dict[str, Any]) -> dict[str, Any]:
    report = run_check(paths, cfg, meta)
    files.save_json(paths.cached("check.json"), report.to_dict(series=False))
    return {"passed": report.passed,
            "not_passed": [i.name for i in report.items if i.status != "pass"]}


def run_check(paths: DatasetPaths, cfg: Config, meta: dict[str, Any]):
    """The recording check on a (possibly partly) preprocessed dataset."""
    points = np.load(paths.cached("points.npy"))
    src = meta["source"]
    if src["kind"] == "video":
        info = media.probe(paths.folder / src["file"])
    else:  # a folder of frames: describe it as the 25 fps video it stands for
        n, fps = meta["n_frames"], meta["fps"]
        info = media.MediaInfo(
            path=paths.full_body_img, duration=n / fps, has_video=True, has_audio=True,
            width=meta["width"], height=meta["height"], fps=float(fps), video_codec="images",
            audio_codec="pcm", audio_rate=meta["sample_rate"], audio_channels=1,
        )
    return check.check_recording(
        info=info, wav=media.load_audio(paths.aud_wav, cfg.media.sample_rate), points=points,
        found=np.load(paths.cached("found.npy")), scheme=landmarks.scheme_for(points.shape[1]),
        boxes=np.load(paths.cached("boxes.npy")), cfg=cfg,
        applied_offset=int((meta.get("results", {}).get("audio", {}).get("av_offset") or {})
                           .get("applied", 0)),
    )


def _read_meta(paths: DatasetPaths) -> dict[str, Any]:
    try:
        return json.loads(paths.meta.read_text())
    except (OSError, ValueError):
        return {}
