"""Lip-sync preview without a front end: what it sends the browser (frame batches, sizes,
waveform, sound), the static figure and the notebook display. The browser half is tested in
tests/test_preview_browser.py."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import soundfile as sf

from synctalk_lib import widgets

N, FPS, SR = 30, 25, 16_000


@pytest.fixture
def clips():
    rng = np.random.default_rng(0)
    real = rng.integers(0, 255, (N, 80, 64, 3), np.uint8)
    generated = real[::-1].copy()
    wav = (0.2 * np.sin(np.arange(N * SR // FPS) / 7.0)).astype(np.float32)
    return real, generated, wav


def _decode(jpeg: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR),
                        cv2.COLOR_BGR2RGB)


def test_preview_describes_the_clip_for_the_browser(clips):
    real, generated, wav = clips
    scores = np.linspace(-1.0, 2.0, N)
    p = widgets.LipSyncPreview({"real": real, "generated": generated}, wav, scores=scores)
    assert p.n_frames == N and p.fps == FPS
    assert p.labels == ["real", "generated"] and p.view == widgets.SIDE_BY_SIDE
    assert p.views == [widgets.SIDE_BY_SIDE, "real", "generated"]
    assert p.sizes == [[64, 80], [64, 80]]  # frames at their own size by default
    np.testing.assert_allclose(p.scores, scores, atol=1e-6)
    sound, rate = sf.read(io.BytesIO(p.audio_wav), dtype="float32")  # the whole clip, once
    assert rate == SR and len(sound) == len(wav)
    np.testing.assert_allclose(sound, wav, atol=1e-3)
    wave = cv2.imdecode(np.frombuffer(p.wave_png, np.uint8), cv2.IMREAD_COLOR)
    assert wave.shape[:2] == (widgets.WAVE_HEIGHT, 64 + widgets.GAP + 64)  # as wide as the image


def test_frames_go_to_the_browser_in_batches_when_asked(clips, monkeypatch):
    real, generated, wav = clips
    p = widgets.LipSyncPreview({"real": real, "generated": generated}, wav)
    sent = []
    monkeypatch.setattr(p, "send", lambda content, buffers=None: sent.append((content, buffers)))
    p._on_message(p, {"type": "frames", "start": 10, "stop": 14}, [])
    (content, buffers), = sent
    assert content == {"type": "frames", "start": 10, "stop": 14}
    assert len(buffers) == 4 * 2  # each frame's sets in order
    for k, i in enumerate(range(10, 14)):
        for s, frames in enumerate((real, generated)):
            got = _decode(buffers[2 * k + s]).astype(int)
            assert got.shape == (80, 64, 3)
            assert np.abs(got - frames[i]).mean() < np.abs(got - frames[i - 1]).mean()
    sent.clear()
    p._on_message(p, {"type": "frames", "start": N - 2, "stop": N + 50}, [])  # past the end
    assert sent[0][0]["stop"] == N and len(sent[0][1]) == 2 * 2
    sent.clear()
    p._on_message(p, {"type": "other"}, [])
    p._on_message(p, {"type": "frames", "start": N, "stop": N + 5}, [])
    assert not sent


def test_a_batch_is_capped_whatever_the_browser_asks():
    long_clip = np.zeros((200, 8, 8, 3), np.uint8)
    p = widgets.LipSyncPreview([long_clip])
    assert len(p.frame_jpegs(0, 200)) == widgets.MAX_BATCH


def test_scale_shrinks_frames_and_waveform_together(clips):
    real, generated, wav = clips
    p = widgets.LipSyncPreview({"real": real, "generated": generated[:, :40]}, wav, scale=0.5)
    assert p.sizes == [[32, 40], [32, 20]]
    both = p.frame_image(12)
    assert both.shape == (40, 32 + widgets.GAP + 32, 3)  # top-aligned, white below the short one
    assert (both[20:, 32 + widgets.GAP:] == 255).all()
    p.view = "generated"  # A/B: one set at a time
    np.testing.assert_array_equal(p.frame_image(12), p.panel("generated", 12))
    assert p._strip.shape[1] == both.shape[1]
    with pytest.raises(ValueError, match="scale"):
        widgets.LipSyncPreview([real], scale=0)


def test_height_brings_every_set_to_it_and_frames_read_one_by_one_shrink_as_they_come(clips):
    real, _, wav = clips
    big = np.repeat(np.repeat(real, 2, axis=1), 2, axis=2)  # 160x128
    p = widgets.LipSyncPreview({"real": real, "big": (f for f in big)}, wav, height=40)
    assert p.sizes == [[32, 40], [32, 40]]
    assert p.sets["big"].shape == (N, 40, 32, 3)  # the generator's frames were shrunk on reading
    assert p.sets["real"].shape == real.shape  # an array is shrunk when sent
    assert _decode(p.frame_jpegs(0, 1)[0]).shape == (40, 32, 3)


def test_waveform_cursor_moves_with_the_frame(clips):
    real, _, wav = clips
    p = widgets.LipSyncPreview([real], wav)
    red = np.array(widgets.CURSOR_COLOUR)

    def cursor(index: int) -> int:
        return int(np.flatnonzero((p.waveform_image(index) == red).all(axis=2).any(axis=0))[-1])

    assert cursor(0) < cursor(N // 2) < cursor(N - 1)
    assert cursor(N // 2) == widgets.cursor_x(N // 2, N, 64)
    assert p.views == ["A"]  # one set: nothing to compare side by side


def test_static_figure_shows_frames_waveform_and_scores(clips, tmp_path):
    real, generated, wav = clips
    p = widgets.preview({"real": real, "generated": generated}, wav,
                        scores=np.arange(N, dtype=np.float32), title="demo")
    fig = p.static_figure(n=4)
    assert len(fig.axes) == 2 * 4 + 2  # frame grid, waveform and its score axis
    fig.savefig(tmp_path / "preview.png")
    assert (tmp_path / "preview.png").stat().st_size > 1000


def test_display_in_a_notebook_gives_the_widget_and_a_figure(clips):
    from IPython.core.interactiveshell import InteractiveShell

    real, generated, wav = clips
    p = widgets.LipSyncPreview({"real": real, "generated": generated}, wav)
    data, _ = InteractiveShell.instance().display_formatter.format(p)
    assert data["application/vnd.jupyter.widget-view+json"]["model_id"] == p.model_id
    assert data["image/png"][:4] == b"\x89PNG"


def test_preview_without_audio_or_with_gaps_in_scores_still_works(clips):
    real, generated, _ = clips
    scores = np.ones(N, np.float32)
    scores[3] = np.nan
    p = widgets.LipSyncPreview({"real": real, "generated": generated[:20]}, scores=scores)
    assert p.n_frames == 20 and p.audio_wav == b"" and p.score_at(3) != p.score_at(3)
    assert p.scores[3] is None and len(p.scores) == 20  # NaN is no JSON: sent as null
    p.static_figure(n=3)


def test_bad_frames_are_refused_with_the_expected_layout():
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\) uint8"):
        widgets.LipSyncPreview({"real": np.zeros((4, 8, 8), np.uint8)})
    with pytest.raises(ValueError, match="uint8"):
        widgets.LipSyncPreview([np.zeros((4, 8, 8, 3), np.float32)])
    with pytest.raises(ValueError, match="object"):  # frames of different sizes
        widgets.LipSyncPreview([[np.zeros((8, 8, 3), np.uint8), np.zeros((4, 8, 3), np.uint8)]])
    with pytest.raises(ValueError, match="no clips"):
        widgets.LipSyncPreview({})
