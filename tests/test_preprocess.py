import shutil

import cv2
import numpy as np
import pytest
from helpers import shared_clip, write_face_video

from synctalk_lib import dataset, landmarks, media, preprocess
from synctalk_lib.config import get_config

CFG = get_config("tiny")


def _copy_dataset(face_video, tmp_path, name="face"):
    (tmp_path / name).mkdir()
    shutil.copy(face_video, tmp_path / name / f"{name}.mp4")
    return tmp_path


@pytest.fixture(scope="module")
def prepared(face_video, tmp_path_factory):
    root = _copy_dataset(face_video, tmp_path_factory.mktemp("prep"))
    return preprocess.preprocess("face", root=root, cfg=CFG, progress=False)


def test_outputs_have_aligned_shapes(prepared):
    ds = prepared
    n = ds.n_frames
    assert n == 50
    assert ds.points().shape == (n, 468, 2) and ds.found().all()
    assert ds.boxes().shape == (n, 4)
    assert ds.crops().shape == (n, 328, 328, 3)
    assert ds.mel_windows().shape == (n, 80, 16)
    wav = ds.wav()
    assert abs(len(wav) / 16000 - n / 25) < 1 / 25
    assert len(list(ds.paths.landmarks_dir.glob("*.lms"))) == n
    pts, _ = landmarks.read_lms(ds.paths.landmarks_dir / "7.lms")
    np.testing.assert_allclose(pts, ds.points()[7], atol=0.01)
    assert ds.check()["items"]


def test_crops_show_the_lower_face(prepared, astronaut):
    crops = prepared.crops()
    box = prepared.boxes()[0]
    again = cv2.resize(astronaut[int(box[1]):int(box[3]), int(box[0]):int(box[2])], (328, 328))
    # the video is H.264 and drifts by a few pixels, so compare loosely
    assert np.abs(crops[0].astype(int) - again).mean() < 25


def test_rerun_uses_the_cache_and_settings_invalidate_it(prepared):
    ds = prepared
    crops_file = ds.paths.cached(ds.meta["crops_file"])
    before = crops_file.stat().st_mtime_ns, ds.paths.cached("points.npy").stat().st_mtime_ns
    again = preprocess.preprocess("face", root=ds.paths.folder.parent, cfg=CFG, progress=False)
    assert again.meta["stages"] == ds.meta["stages"]
    assert (crops_file.stat().st_mtime_ns, ds.paths.cached("points.npy").stat().st_mtime_ns) \
        == before
    changed = CFG.override({"crop.smooth_frames": 5})
    third = preprocess.preprocess("face", root=ds.paths.folder.parent, cfg=changed,
                                  progress=False)
    assert third.meta["stages"]["landmarks"] == ds.meta["stages"]["landmarks"]
    assert third.meta["stages"]["crops"] != ds.meta["stages"]["crops"]
    assert ds.paths.cached("points.npy").stat().st_mtime_ns == before[1]
    assert crops_file.stat().st_mtime_ns != before[0]


def test_frames_without_a_face_are_filled_and_counted(tmp_path, astronaut):
    (tmp_path / "gaps").mkdir()
    write_face_video(tmp_path / "gaps" / "gaps.mp4", astronaut, n=40, blank={10, 11, 25})
    ds = preprocess.preprocess("gaps", root=tmp_path, cfg=CFG, progress=False)
    result = ds.meta["results"]["landmarks"]
    assert result["frames_without_face"] == 3
    assert result["missing_ranges"] == [[10, 12], [25, 26]]
    assert result["backend"] == landmarks.resolve_backend("auto")
    assert not ds.found()[10] and ds.found()[9]
    pts = ds.points()
    assert np.isfinite(pts).all()
    np.testing.assert_allclose(pts[10], pts[9] + (pts[12] - pts[9]) / 3, atol=1e-3)


def _assert_nothing_written(folder):
    assert not (folder / "cache" / "meta.json").exists()
    assert not (folder / "landmarks").exists()
    assert not list(folder.glob("cache/crops_*"))
    assert not (folder / "aud_mel.npy").exists()


def test_too_many_missing_faces_is_an_error(tmp_path, astronaut):
    (tmp_path / "gone").mkdir()
    write_face_video(tmp_path / "gone" / "gone.mp4", astronaut, n=30, blank=set(range(5, 25)))
    with pytest.raises(preprocess.PreprocessError, match="only 10 of 30 frames"):
        preprocess.preprocess("gone", root=tmp_path, cfg=CFG, progress=False)
    _assert_nothing_written(tmp_path / "gone")


def test_no_face_anywhere_is_an_error(tmp_path):
    (tmp_path / "noface").mkdir()
    media.run_ffmpeg(["-f", "lavfi", "-i", "color=c=0x607080:size=320x240:rate=25:duration=1,noise=alls=40:allf=t",
                      "-f", "lavfi", "-i", "sine=frequency=300:duration=1", "-shortest",
                      "-pix_fmt", "yuv420p", str(tmp_path / "noface" / "noface.mp4")])
    with pytest.raises(preprocess.PreprocessError, match="no face found in any frame"):
        preprocess.preprocess("noface", root=tmp_path, cfg=CFG, progress=False)
    _assert_nothing_written(tmp_path / "noface")


def test_video_without_audio_is_an_error(tmp_path, astronaut):
    (tmp_path / "mute").mkdir()
    write_face_video(tmp_path / "mute" / "mute.mp4", astronaut, n=10, audio=False)
    with pytest.raises(preprocess.PreprocessError, match="no audio track"):
        preprocess.preprocess("mute", root=tmp_path, cfg=CFG, progress=False)
    _assert_nothing_written(tmp_path / "mute")


@pytest.mark.parametrize("content", [b"", b"this is not a video\n" * 10])
def test_empty_or_non_video_file_is_an_error(tmp_path, content):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "bad.mp4").write_bytes(content)
    with pytest.raises(preprocess.PreprocessError, match="bad.mp4"):
        preprocess.preprocess("bad", root=tmp_path, cfg=CFG, progress=False)
    _assert_nothing_written(tmp_path / "bad")


def test_missing_inputs_are_clear_errors(tmp_path):
    with pytest.raises(preprocess.PreprocessError, match="no dataset folder"):
        preprocess.preprocess("nobody", root=tmp_path, cfg=CFG, progress=False)
    with pytest.raises(preprocess.PreprocessError, match="no such video"):
        preprocess.preprocess("x", root=tmp_path, cfg=CFG, video=tmp_path / "missing.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(preprocess.PreprocessError, match="nothing to preprocess"):
        preprocess.preprocess("empty", root=tmp_path, cfg=CFG, progress=False)
    with pytest.raises(preprocess.PreprocessError, match="not preprocessed"):
        dataset.load_dataset("empty", root=tmp_path)
    with pytest.raises(preprocess.PreprocessError, match="invalid dataset name"):
        preprocess.preprocess("../etc", root=tmp_path)


def test_video_argument_is_copied_into_the_dataset(tmp_path, face_video):
    ds = preprocess.preprocess("copied", root=tmp_path, cfg=CFG, video=face_video,
                               progress=False)
    assert (tmp_path / "copied" / "copied.mp4").is_file()
    assert dataset.load_dataset("copied", root=tmp_path).n_frames == ds.n_frames


def _legacy_folder(tmp_path, prepared):
    """full_body_img/N.jpg + 110-point landmarks/N.lms + aud.wav, as SyncTalk_2D leaves them."""
    folder = tmp_path / "legacy"
    (folder / "full_body_img").mkdir(parents=True)
    (folder / "landmarks").mkdir()
    src_pts, s = prepared.points(), landmarks.MEDIAPIPE
    for i, frame in enumerate(prepared.frames().iter_frames(count=20)):
        cv2.imwrite(str(folder / "full_body_img" / f"{i}.jpg"), frame[..., ::-1])
        legacy = np.zeros((110, 2), np.float32)
        legacy[1], legacy[31] = src_pts[i, s.left], src_pts[i, s.right]
        legacy[52] = src_pts[i, s.top]
        np.savetxt(folder / "landmarks" / f"{i}.lms", legacy, fmt="%.2f")
    shutil.copy(prepared.paths.aud_wav, folder / "aud.wav")
    return folder


def test_synctalk2d_folder_is_accepted(tmp_path, prepared):
    folder = _legacy_folder(tmp_path, prepared)
    ds = preprocess.preprocess("legacy", root=tmp_path, cfg=CFG, progress=False)
    assert ds.meta["scheme"] == "synctalk110" and ds.n_frames == 20
    np.testing.assert_allclose(ds.boxes()[5], prepared.boxes()[5], atol=1.5)
    assert ds.crops().shape == (20, 328, 328, 3)
    # the user's landmark files are left as they were
    assert np.loadtxt(folder / "landmarks" / "0.lms").shape == (110, 2)


def test_a_folders_own_aud_wav_is_shifted_once_and_kept(tmp_path, prepared):
    """media.av_offset on a SyncTalk_2D folder: the recorded aud.wav is kept aside, so running
    again does not shift twice and av_offset=0 brings the recording back."""
    folder = _legacy_folder(tmp_path, prepared)
    recorded = media.load_audio(folder / "aud.wav", 16_000)
    late = CFG.override({"media.av_offset": "2"})
    for _ in range(2):
        ds = preprocess.preprocess("legacy", root=tmp_path, cfg=late, progress=False)
        np.testing.assert_allclose(ds.wav()[: -2 * 640], recorded[2 * 640:], atol=1e-4)
    assert ds.meta["av_offset"]["applied"] == 2
    np.testing.assert_allclose(media.load_audio(ds.paths.cached("aud_recorded.wav")), recorded,
                               atol=1e-4)
    ds = preprocess.preprocess("legacy", root=tmp_path, cfg=CFG.override(
        {"media.av_offset": "0"}), progress=False)
    np.testing.assert_allclose(ds.wav(), recorded, atol=1e-4)


def test_an_av_offset_that_is_not_a_number_is_refused(prepared):
    with pytest.raises(preprocess.PreprocessError, match="media.av_offset"):
        preprocess.preprocess("face", root=prepared.paths.folder.parent,
                              cfg=CFG.override({"media.av_offset": "late"}), progress=False)


@pytest.mark.shared_data
@pytest.mark.parametrize("clip", ["real_talk_a.mp4", "real_talk_b.mp4", "real_talk_c.mp4"])
def test_real_clips_find_faces_and_boxes_move_smoothly(tmp_path, clip):
    path = shared_clip(clip)
    ds = preprocess.preprocess("real", root=tmp_path, cfg=get_config("cpu"), video=path,
                               progress=False)
    info = media.probe(path)
    assert abs(ds.n_frames - info.duration * 25) <= 2
    assert ds.found().mean() >= 0.99
    boxes = ds.boxes()
    side = boxes[:, 2] - boxes[:, 0]
    # real nods move the box several pixels a frame (clip c: 25% of its width in 0.4 s);
    # what must not happen is a jump beyond a few percent, or jitter around the motion
    jumps = np.abs(np.diff(boxes, axis=0)).max(axis=1) / side[1:]
    assert jumps.max() < 0.05, f"crop box jumps by {jumps.max():.1%} of its width"
    jitter = np.abs(np.diff(boxes, 2, axis=0)).max(axis=1) / side[2:]
    assert np.median(jitter) < 0.003 and jitter.max() < 0.025
