"""Lip-sync preview: builds and scrubs without a front end, static figure, notebook display."""

from __future__ import annotations

import numpy as np
import pytest

from synctalk_lib import widgets

N, FPS, SR = 30, 25, 16_000


@pytest.fixture
def clips():
    rng = np.random.default_rng(0)
    real = rng.integers(0, 255, (N, 80, 64, 3), np.uint8)
    generated = real[::-1].copy()
    wav = (0.2 * np.sin(np.arange(N * SR // FPS) / 7.0)).astype(np.float32)
    return real, generated, wav


def test_preview_builds_without_a_front_end_and_scrubs(clips):
    real, generated, wav = clips
    scores = np.linspace(-1.0, 2.0, N)
    p = widgets.LipSyncPreview({"real": real, "generated": generated}, wav, scores=scores,
                               height=120)
    assert p.n_frames == N and p.play.max == N - 1 == p.slider.max
    first_image, first_wave = p.image.value, p.wave.value
    p.slider.value = 12  # what the Play button does through the jslink in a browser
    assert p.image.value != first_image and p.wave.value != first_wave
    assert "frame 12" in p.info.value and f"{scores[12]:.2f}" in p.info.value
    both = p.frame_image(12)
    assert both.shape == (120, 2 * 96 + 4, 3)  # two 64x80 frames at height 120, a gap
    p.view.value = "generated"  # A/B: one set at a time
    np.testing.assert_array_equal(p.frame_image(12), p.frame_image(12, "generated"))
    assert p.frame_image(12).shape == (120, 96, 3)


def test_waveform_cursor_moves_with_the_frame(clips):
    real, _, wav = clips
    p = widgets.LipSyncPreview([real], wav)
    red = np.array(widgets.CURSOR_COLOUR)

    def cursor_x(index: int) -> int:
        return int(np.flatnonzero((p.waveform_image(index) == red).all(axis=2).any(axis=0))[-1])

    assert cursor_x(0) < cursor_x(N // 2) < cursor_x(N - 1)
    assert list(p.view.options) == ["A"]  # one set: nothing to compare side by side


def test_play_starts_the_sound_at_the_current_frame(clips):
    real, generated, wav = clips
    p = widgets.LipSyncPreview([real, generated], wav)
    full = p.audio.value
    p.slider.value = 10
    p.play.playing = True
    assert p.audio.autoplay and len(p.audio.value) < len(full)
    p.play.playing = False
    assert not p.audio.autoplay and p.audio.value == full


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
    assert "application/vnd.jupyter.widget-view+json" in data
    assert data["image/png"][:4] == b"\x89PNG"


def test_preview_without_audio_or_scores_still_works(clips):
    real, generated, _ = clips
    p = widgets.LipSyncPreview({"real": real, "generated": generated[:20]})
    assert p.n_frames == 20 and p.audio is None and p.score_at(3) is None
    p.play.playing = True  # nothing to play: no error
    p.static_figure(n=3)


def test_bad_frames_are_refused_with_the_expected_layout():
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\) uint8"):
        widgets.LipSyncPreview({"real": np.zeros((4, 8, 8), np.uint8)})
    with pytest.raises(ValueError, match="uint8"):
        widgets.LipSyncPreview([np.zeros((4, 8, 8, 3), np.float32)])
    with pytest.raises(ValueError, match="no clips"):
        widgets.LipSyncPreview({})
