"""The fast render path: a template cursor (one forward decoder, held frames for the way
back), paste-back into yuv420p planes, and an encoder fed those planes unconverted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import load_avatar

from synctalk_lib import crop, media, templates
from synctalk_lib.dataset import load_dataset


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def _ffmpeg_children() -> set[int]:
    """Process ids of this process's running ffmpeg children (Linux /proc). A zombie (ended,
    not yet reaped: another test's Popen waiting for the garbage collector) is not running."""
    found = set()
    for task in Path("/proc/self/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                comm = Path(f"/proc/{pid}/comm").read_text()
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:  # ended meanwhile
                continue
            if "ffmpeg" in comm and state != "Z":
                found.add(int(pid))
    return found


def test_cursor_gives_the_readers_frames_in_bounce_order_with_few_decoders(trained_person,
                                                                           tmp_path):
    ds = load_dataset(trained_person.name, trained_person.dataset_root)
    reader = templates.TemplateReader(ds.frames(), tmp_path, block=8)
    n = len(reader)
    order = [*templates.loop_back_sequence(2 * n, n).tolist(), 1, 2, 3, 40, 41, 39, 38, 5]
    with reader.cursor() as cursor:
        for i in order:
            np.testing.assert_array_equal(cursor[i], reader[i])
            assert len(cursor._recent) + len(cursor._back) <= 16  # bounded memory
        # forward: one decoder; back: one per 2 blocks of 8; then the jumps (1, 40, 39, 5)
        assert cursor.processes <= 1 + -(-n // 16) + 4
    whole = list(media.read_frames_cfr(tmp_path / "templates_g8.mp4", reader.source.fps, 0, None,
                                       (reader.source.width, reader.source.height),
                                       "yuv420p"))
    assert len(whole) == n and whole[0].shape == (reader.source.height * 3 // 2,
                                                  reader.source.width)
    with reader.cursor("yuv420p") as cursor:
        for i in order:
            np.testing.assert_array_equal(cursor[i], whole[i])


def test_closing_a_stream_ends_its_decoder(avatar, speech):
    before = _ffmpeg_children()  # other tests' decoders, if any, are not this stream's
    live = avatar.stream(audio=speech)
    frames = live.push(speech[:16000])
    # the forward decoder keeps running between pushes
    assert frames and _ffmpeg_children() - before
    live.close()
    assert not _ffmpeg_children() - before
    with pytest.raises(RuntimeError, match="stop"), avatar.stream(audio=speech) as live:
        live.push(speech[:16000])
        raise RuntimeError("stop")
    assert not _ffmpeg_children() - before


def test_yuv_paste_converts_and_changes_only_the_pasted_region(avatar):
    t = 20
    cursor = avatar.reader.cursor("yuv420p")
    yuv = cursor[t]
    before = yuv.copy()
    rgb = avatar.reader[t]
    patch = np.clip(avatar.template_patch(t).astype(int) + 40, 0, 255).astype(np.uint8)
    args = (np.asarray(avatar.crops[t]), avatar.boxes[t], patch, avatar.paste_masks[t])
    out = avatar.compositor.paste_yuv(yuv, *args)
    want = avatar.compositor(rgb, *args)
    np.testing.assert_array_equal(yuv, before)  # the cursor's frame is left alone
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = media.even_box(*crop.paste_region(avatar.boxes[t], w, h), w, h)
    outside = np.ones((h, w), bool)
    outside[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(out[:h][outside], before[:h][outside])  # luma untouched
    got = media.yuv_to_rgb(out)
    assert np.abs(got.astype(int) - want).max(axis=2)[y0:y1, x0:x1].mean() < 2
    assert _psnr(got[y0:y1, x0:x1], want[y0:y1, x0:x1]) > 40
    assert _psnr(got[y0:y1, x0:x1], rgb[y0:y1, x0:x1]) < 35  # the paste did change it
    cursor.close()


def test_yuv_render_matches_the_rgb_render(trained_person, speech, tmp_path):
    # lossless x264 (CRF 0), so the comparison sees the two paths, not x264's decisions on
    # inputs a level apart (at CRF 18 those alone put two encodes 40-45 dB apart)
    fast, slow = (load_avatar(trained_person, backend="onnx",
                        overrides={"infer.crf": 0, "infer.yuv_render": yuv})
                  for yuv in (True, False))
    assert fast.reader.yuv_ok
    a = fast.render(speech, tmp_path / "yuv.mp4", progress=False)
    b = slow.render(speech, tmp_path / "rgb.mp4", progress=False)
    assert a.templates == b.templates
    psnrs = [_psnr(x, y) for x, y in zip(media.read_frames(a.path), media.read_frames(b.path),
                                         strict=True)]
    assert len(psnrs) == a.n_frames and min(psnrs) > 50


def test_video_writer_takes_yuv420p_planes(tmp_path):
    yy, xx = np.mgrid[0:64, 0:96]
    frames = [np.stack([(xx * 2 + k) % 256, yy * 3, np.full_like(xx, 90)], -1).astype(np.uint8)
              for k in range(5)]
    with media.VideoWriter(tmp_path / "v.mp4", pixel_format="yuv420p", crf=10,
                           preset="ultrafast") as writer:
        for f in frames:
            writer.write(media.rgb_to_yuv(f))
    back = list(media.read_frames(tmp_path / "v.mp4"))
    assert len(back) == 5 and back[0].shape == (64, 96, 3)
    assert np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(back, frames)]) < 3
    with pytest.raises(media.MediaError, match="I420"), media.VideoWriter(
            tmp_path / "w.mp4", pixel_format="yuv420p") as writer:
        writer.write(frames[0])
    with pytest.raises(media.MediaError, match="pixel format"):
        media.VideoWriter(tmp_path / "x.mp4", pixel_format="nv12")
