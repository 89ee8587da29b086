"""espeak-ng speech through ctypes: audio, phoneme timing, errors, repeatability."""

import subprocess
import sys

import numpy as np
import pytest

from synctalk_lib import tts


@pytest.fixture(scope="module")
def hello() -> tts.Speech:
    return tts.synthesize("Hello world")


def test_hello_is_audible_float32_at_16k(hello):
    assert hello.sample_rate == 16_000
    assert hello.audio.dtype == np.float32 and hello.audio.ndim == 1
    assert 0.5 < hello.duration < 3.0
    assert np.sqrt(np.mean(hello.audio**2)) > 0.01
    assert np.abs(hello.audio).max() <= 1.0


def test_phoneme_times_increase_within_the_audio(hello):
    times = [t for t, _ in hello.phonemes]
    names = [name for _, name in hello.phonemes]
    assert len(times) >= 6  # h @ l oU w 3: l d
    assert np.all(np.diff(times) >= 0)
    assert 0 <= times[0] and times[-1] <= hello.duration
    assert "h" in names and "w" in names


def test_sample_rate_is_honoured():
    speech = tts.synthesize("Hello world", sample_rate=22_050)
    assert speech.sample_rate == 22_050
    assert 0.5 < len(speech.audio) / 22_050 < 3.0


def test_same_text_gives_identical_samples(hello):
    tts.synthesize("Something else in between, to move espeak's internal state.")
    again = tts.synthesize("Hello world")
    assert np.array_equal(again.audio, hello.audio)
    assert again.phonemes == hello.phonemes


@pytest.mark.parametrize("text", ["", "   \n"])
def test_empty_text_is_refused(text):
    with pytest.raises(ValueError, match="empty"):
        tts.synthesize(text)


def test_too_long_text_names_the_limit():
    with pytest.raises(ValueError, match="limit of 100"):
        tts.synthesize("word " * 50, max_chars=100)
    with pytest.raises(ValueError, match=str(tts.MAX_CHARS)):
        tts.synthesize("a" * (tts.MAX_CHARS + 1))


def test_unknown_voice_lists_valid_ones():
    with pytest.raises(ValueError, match="en-us"):
        tts.synthesize("Hello", voice="no-such-voice")


def test_voices_include_american_english():
    voices = tts.list_voices()
    assert "en-us" in voices and len(voices) > 20


def test_listed_english_voices_speak():
    """Tags such as en-gb name no voice file of their own: they are chosen by language."""
    english = [v for v in tts.list_voices() if v.startswith("en")]
    assert "en-gb" in english
    for voice in english:
        assert tts.synthesize("Good morning.", voice=voice).duration > 0.3, voice


def test_long_variants_are_refused_before_reaching_espeak():
    """A 37+ character variant overflowed a fixed buffer in espeak_SetVoiceByName (SIGABRT), so
    this runs in a child process: a regression must not kill pytest."""
    code = ("import sys; from synctalk_lib import tts\n"
            "for voice in sys.argv[1:]:\n"
            "    try:\n        tts.synthesize('hi', voice=voice)\n"
            "    except ValueError as exc:\n        print('refused:', exc)\n")
    voices = [f"en-us+{'a' * n}" for n in (37, 40, 200)]
    result = subprocess.run([sys.executable, "-c", code, *voices], check=False,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (result.returncode, result.stderr[-500:])
    refusals = result.stdout.splitlines()
    assert len(refusals) == 3 and all("unknown espeak-ng voice" in r and "characters" in r
                                      for r in refusals), refusals


@pytest.mark.parametrize("voice", ["en-us+zzz", "en-us+../../etc/passwd", "en-us+f3+f4",
                                   "de+", "+f3", "en-us\0", "x" * 300])
def test_voices_and_variants_must_be_installed(voice):
    with pytest.raises(ValueError, match="unknown espeak-ng voice"):
        tts.synthesize("Hello", voice=voice)


def test_installed_variants_speak():
    variants = tts.list_variants()
    assert {"f3", "klatt"} <= set(variants)
    assert all(len(v) <= tts.MAX_VARIANT_CHARS for v in variants)
    plain = tts.synthesize("Good morning.", voice="en-us")
    female = tts.synthesize("Good morning.", voice="en-us+f3")
    assert female.duration > 0.3 and not np.array_equal(plain.audio[:1000], female.audio[:1000])


def test_nul_in_text_is_refused_not_cut():
    with pytest.raises(ValueError, match=r"NUL character \(\\x00\) at position 5"):
        tts.synthesize("hello\x00world")
    assert tts.synthesize("hello\n\tworld").duration > tts.synthesize("hello").duration
