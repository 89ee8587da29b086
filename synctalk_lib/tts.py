"""Offline text-to-speech with espeak-ng, with per-phoneme timing.

The `espeakng-loader` wheel ships `libespeak-ng.so` and its voice data, so speech works with
no network and no system package. We drive the C API through ctypes (docs/design.md §8):
synchronous mode hands every block of 22.05 kHz PCM to a callback together with the events
that fall in it; with phoneme events enabled, each phoneme arrives with its start sample, so
the demo can drive a mouth from the exact phonemes it hears.

espeak-ng keeps its state in globals of the C library (one voice, one callback, one rate), so
every call runs under one module lock, which makes `synthesize` safe to call from a server's
worker threads (calls run one at a time, each a few ms plus ~2 ms per second of speech). Each
call loads the library afresh so that equal inputs give bit-identical outputs (see `_Engine`).
"""

from __future__ import annotations

import _ctypes
import contextlib
import ctypes
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from math import gcd

import numpy as np
from scipy.signal import resample_poly

log = logging.getLogger(__name__)

MAX_CHARS = 5000  # default cap on input text; a server must not let one request hog the lock
# espeak_SetVoiceByName copies the name into char[60] and "!v/" + the variant into a static
# char[40] with sprintf: a variant of 37+ characters aborts the process (buffer overflow), so
# names are checked against these limits and against the installed voices before any C call.
MAX_VOICE_CHARS = 50
MAX_VARIANT_CHARS = 30
DEFAULT_PITCH = 50  # espeak's own default on its 0..100 scale

# Constants of espeak-ng's speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2  # samples come back through the callback, no audio device
_BUFFER_MS = 500  # size of the blocks handed to the callback
_INITIALIZE_PHONEME_EVENTS = 0x0001  # emit espeakEVENT_PHONEME events
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_PARAM_RATE = 1  # words per minute, 80..450
_PARAM_PITCH = 3  # 0..100
_EE_OK = 0


class _EventId(ctypes.Union):
    _fields_ = [
        ("number", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("string", ctypes.c_char * 8),  # phoneme mnemonic, zero-terminated unless 8 bytes long
    ]


class _Event(ctypes.Structure):
    """`espeak_EVENT` (speak_lib.h); size 40 bytes on 64-bit, checked against real events."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms from the start of this synth call
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _Voice(ctypes.Structure):
    """`espeak_VOICE` (speak_lib.h), as returned by espeak_ListVoices."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),  # (priority byte, language string) pairs, 0-terminated
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_Callback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


class TTSError(RuntimeError):
    """espeak-ng is missing or failed while synthesising."""


@dataclass(frozen=True)
class Speech:
    """Synthesised speech.

    audio: (N,) float32 mono in [-1, 1] at `sample_rate`.
    phonemes: (start time in s, espeak phoneme mnemonic) in time order; stress marks (`'`, `,`)
        are kept as espeak writes them, and `_` / `_:` mark pauses.
    """

    audio: np.ndarray
    sample_rate: int
    phonemes: list[tuple[float, str]] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate


class _Engine:
    """One load of libespeak-ng, initialised for synchronous output; use only under `_LOCK`.

    espeak-ng keeps synthesis state in C statics that `espeak_Terminate` does not reset (e.g.
    the pitch-flutter phase in wavegen.c), so a second call on the same text gives slightly
    different samples and phoneme times. Loading the library afresh for each call (dlopen
    after dlclose re-initialises its statics) makes equal inputs give equal outputs; it costs
    a few ms per call. (If another module of the process holds the same library loaded, the
    unload is a no-op: speech stays correct but may differ by a few samples between calls.)
    """

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as exc:
            raise TTSError(
                "espeak-ng is not installed; run `pip install espeakng-loader` in the venv"
            ) from exc
        self.lib_path = espeakng_loader.get_library_path()
        try:
            lib = ctypes.CDLL(self.lib_path)
        except OSError as exc:
            raise TTSError(f"cannot load espeak-ng from {self.lib_path}: {exc}") from exc
        _declare(lib)
        data_path = espeakng_loader.get_data_path().encode()
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data_path, _INITIALIZE_PHONEME_EVENTS
        )
        if rate <= 0:
            _unload(lib)
            raise TTSError(f"espeak_Initialize failed (returned {rate}); data path {data_path!r}")
        self.lib = lib
        self.native_rate = int(rate)
        self._chunks: list[np.ndarray] = []
        self._phonemes: list[tuple[int, str]] = []  # (start sample, name)
        # keep a reference: ctypes frees the trampoline when the Python object dies
        self._callback = _Callback(self._on_synth)
        lib.espeak_SetSynthCallback(self._callback)

    def close(self) -> None:
        self.lib.espeak_Terminate()
        _unload(self.lib)

    def _on_synth(self, wav, n_samples, events) -> int:  # type: ignore[no-untyped-def]
        if n_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (n_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type == _EVENT_PHONEME:
                name = event.id.string.decode("utf-8", "replace")
                self._phonemes.append((event.sample, name))
            i += 1
        return 0  # 0 = continue

    def voices(self) -> list[str]:
        entries = self.lib.espeak_ListVoices(None)
        names = []
        i = 0
        while entries[i]:
            languages = entries[i].contents.languages or b""
            # first pair: one priority byte, then the language tag
            names.append(languages[1:].split(b"\0")[0].decode())
            i += 1
        return sorted(set(filter(None, names)))

    def variants(self) -> list[str]:
        """Names usable after '+' ("f3", "klatt"): the voices espeak lists for "variant"."""
        spec = _Voice()
        spec.languages = b"variant"
        entries = self.lib.espeak_ListVoices(ctypes.byref(spec))
        names = []
        i = 0
        while entries[i]:
            identifier = (entries[i].contents.identifier or b"").decode("utf-8", "replace")
            if identifier.startswith("!v/"):
                names.append(identifier[3:])
            i += 1
        return sorted(set(names))

    def base_names(self) -> set[str]:
        """Lower-cased names espeak_SetVoiceByName or our language fallback accept before a
        '+': language tags, voice file names ("en-US" of "gmw/en-US") and voice names."""
        entries = self.lib.espeak_ListVoices(None)
        names = set(self.voices())
        i = 0
        while entries[i]:
            voice = entries[i].contents
            for raw in (voice.name, (voice.identifier or b"").rsplit(b"/", 1)[-1]):
                if raw:
                    names.add(raw.decode("utf-8", "replace"))
            i += 1
        return {n.lower() for n in names}

    def check_voice(self, voice: str) -> None:
        """ValueError unless `voice` is an installed voice with an installed variant, within
        the lengths espeak's fixed buffers hold; only ListVoices has run so far."""
        base, plus, variant = voice.partition("+")
        problem = None
        if not base or len(voice) > MAX_VOICE_CHARS:
            problem = f"a voice name has 1..{MAX_VOICE_CHARS} characters"
        elif plus and not 0 < len(variant) <= MAX_VARIANT_CHARS:
            problem = f"a variant after '+' has 1..{MAX_VARIANT_CHARS} characters"
        elif base.lower() not in self.base_names():
            problem = f"no voice {base!r} is installed"
        elif plus and variant not in self.variants():
            sample = ", ".join(self.variants()[:12])
            problem = f"no variant {variant!r} is installed (e.g. {sample}; see tts.list_variants())"
        if problem:
            valid = self.voices()
            sample = ", ".join(v for v in valid if v.startswith("en")) or ", ".join(valid[:10])
            raise ValueError(
                f"unknown espeak-ng voice {voice[:80]!r}: {problem}; try one of: {sample} "
                f"(tts.list_voices() lists all {len(valid)})"
            )

    def _set_voice(self, voice: str) -> bool:
        """Select by voice file name ("en-us", "en-us+f3"), else by language tag: several
        listed tags ("en-gb" among them) name no file of their own."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) == _EE_OK:
            return True
        if voice not in self.voices():  # by properties, espeak settles for any near match
            return False
        spec = _Voice()
        spec.languages = voice.encode()
        return self.lib.espeak_SetVoiceByProperties(ctypes.byref(spec)) == _EE_OK

    def synth(self, text: str, voice: str, wpm: int, pitch: int) -> tuple[np.ndarray, list]:
        self.check_voice(voice)
        if not self._set_voice(voice):
            valid = self.voices()
            sample = ", ".join(v for v in valid if v.startswith("en")) or ", ".join(valid[:10])
            raise ValueError(
                f"unknown espeak-ng voice {voice!r}; try one of: {sample} "
                f"(tts.list_voices() lists all {len(valid)})"
            )
        self.lib.espeak_SetParameter(_PARAM_RATE, wpm, 0)
        self.lib.espeak_SetParameter(_PARAM_PITCH, pitch, 0)
        self._chunks, self._phonemes = [], []
        utf8 = text.encode("utf-8")
        err = self.lib.espeak_Synth(
            utf8, len(utf8) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
        )
        if err != _EE_OK:
            raise TTSError(f"espeak_Synth failed with code {err}")
        self.lib.espeak_Synchronize()
        pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return pcm, self._phonemes


def _declare(lib: ctypes.CDLL) -> None:
    """Argument and result types of the espeak-ng calls we make (speak_lib.h)."""
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_Callback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(_Voice)]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
        ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
    ]
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))


def _unload(lib: ctypes.CDLL) -> None:
    """dlclose the library so that the next load starts from fresh C statics."""
    close = getattr(_ctypes, "dlclose", None) or getattr(_ctypes, "FreeLibrary", None)
    if close is not None:
        close(lib._handle)


_LOCK = threading.Lock()


@contextlib.contextmanager
def _session() -> Iterator[_Engine]:
    """A freshly loaded engine for one call (see `_Engine`), under the module lock."""
    with _LOCK:
        engine = _Engine()
        try:
            yield engine
        finally:
            engine.close()


def list_voices() -> list[str]:
    """Language tags of the installed espeak-ng voices, e.g. "en-us", "en-gb", "de"."""
    with _session() as engine:
        return engine.voices()


def list_variants() -> list[str]:
    """Voice variants of the installed espeak-ng, used as "<voice>+<variant>" (en-us+f3)."""
    with _session() as engine:
        return engine.variants()


def check_text(text: str) -> None:
    """ValueError for a NUL: espeak reads text as a C string and would stop speaking there."""
    if "\0" in text:
        at = text.index("\0")
        raise ValueError(f"text contains a NUL character (\\x00) at position {at}; remove it "
                         "(newlines and tabs are fine)")


def synthesize(
    text: str,
    voice: str = "en-us",
    wpm: int = 160,
    pitch: int | None = None,
    sample_rate: int = 16_000,
    max_chars: int = MAX_CHARS,
) -> Speech:
    """Speak `text` with espeak-ng; deterministic for equal arguments.

    Args:
        text: plain UTF-8 text (no SSML); 1..max_chars characters after stripping.
        voice: espeak-ng language tag, see `list_voices()`, optionally with a variant:
            "en-us+f3" (see `list_variants()`); anything else is a ValueError.
        wpm: speaking rate in words per minute (espeak accepts 80..450).
        pitch: 0..100 on espeak's scale; None keeps the voice's default (50).
        sample_rate: output rate; espeak speaks at 22.05 kHz and we resample (polyphase).
        max_chars: refuse longer texts (a server should not block others for minutes).

    Returns:
        `Speech` with float32 mono audio and phoneme start times in seconds.
    """
    check_text(text)
    text = text.strip()
    if not text:
        raise ValueError("text is empty; pass at least one word to speak")
    if len(text) > max_chars:
        raise ValueError(
            f"text has {len(text)} characters, more than the limit of {max_chars}; "
            "split it into shorter parts or raise max_chars"
        )
    if not 80 <= wpm <= 450:
        raise ValueError(f"wpm={wpm} is outside espeak-ng's range 80..450")
    if pitch is not None and not 0 <= pitch <= 100:
        raise ValueError(f"pitch={pitch} is outside espeak-ng's range 0..100")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")

    with _session() as engine:
        pcm, events = engine.synth(text, voice, wpm, DEFAULT_PITCH if pitch is None else pitch)
        native = engine.native_rate

    audio = pcm.astype(np.float32) / 32768.0
    if sample_rate != native:
        g = gcd(sample_rate, native)
        audio = resample_poly(audio, sample_rate // g, native // g).astype(np.float32)
    phonemes = [(sample / native, name) for sample, name in events]
    log.debug("spoke %d chars: %.2f s, %d phonemes", len(text), len(audio) / sample_rate,
              len(phonemes))
    return Speech(audio=audio, sample_rate=sample_rate, phonemes=phonemes)


__all__ = ["MAX_CHARS", "Speech", "TTSError", "check_text", "list_variants", "list_voices",
           "synthesize"]
