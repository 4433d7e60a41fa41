"""Unit tests of the audio checks (tests/integration/audio.py) that the media
tests with real peers rely on: fast, no baresip.

Each case is one a real call can produce: the tone as sent, after a G.711
round trip (µ-law and A-law), with packets lost at the start and in the
middle, with silence around it, a file libsndfile has not closed yet; and the
ones that must fail: silence, another tone, noise (what SRTP decoded with the
wrong key, or RTP it should have dropped, sounds like).
"""

from __future__ import annotations

import math
import random
import struct
import time
import warnings
import wave
from array import array
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.integration.audio import (
    SILENCE_RMS,
    active_segment,
    dominant_frequency,
    find_tone,
    is_silence,
    read_wav,
    read_wav_samples,
    rms,
    sndfile_recordings,
    tone_purity,
    write_tone,
)
from tests.integration.peers import write_wav

RATE = 8000


# -- G.711 as the phones code it (ITU-T G.711; Sun's reference code, as audioop) --


def ulaw_encode(sample: int) -> int:
    """A 16-bit linear sample as a µ-law byte (14-bit magnitude, as the reference code)."""
    value, mask = sample >> 2, 0xFF
    if value < 0:
        value, mask = -value, 0x7F
    value = min(value, 8159) + 0x21
    segment = max(0, value.bit_length() - 6)
    if segment >= 8:
        return 0x7F ^ mask
    return ((segment << 4) | ((value >> (segment + 1)) & 0x0F)) ^ mask


def ulaw_decode(byte: int) -> int:
    """A µ-law byte as a 16-bit linear sample."""
    byte = ~byte & 0xFF
    exponent, mantissa = (byte >> 4) & 0x07, byte & 0x0F
    magnitude = ((mantissa << 3) + 0x84) << exponent
    return 0x84 - magnitude if byte & 0x80 else magnitude - 0x84


def alaw_encode(sample: int) -> int:
    """A 16-bit linear sample as an A-law byte (13-bit magnitude, as the reference code)."""
    value, mask = sample >> 3, 0xD5
    if value < 0:
        value, mask = -value - 1, 0x55
    segment = max(0, value.bit_length() - 5)
    if segment >= 8:
        return 0x7F ^ mask
    shift = 1 if segment < 2 else segment
    return ((segment << 4) | ((value >> shift) & 0x0F)) ^ mask


def alaw_decode(byte: int) -> int:
    """An A-law byte as a 16-bit linear sample."""
    byte ^= 0x55
    exponent, mantissa = (byte >> 4) & 0x07, byte & 0x0F
    magnitude = (mantissa << 4) + 8
    if exponent:
        magnitude = (magnitude + 0x100) << (exponent - 1)
    return magnitude if byte & 0x80 else -magnitude


def g711_round_trip(samples: Sequence[int], law: str) -> list[int]:
    encode, decode = (ulaw_encode, ulaw_decode) if law == "ulaw" else (alaw_encode, alaw_decode)
    return [decode(encode(x)) for x in samples]


def test_g711_codec_matches_known_values() -> None:
    """The codec above is G.711's: the standard's corner values, silence codes,
    and (where ``audioop`` still exists, as in 3.11) byte-for-byte agreement."""
    assert (ulaw_encode(0), ulaw_decode(0xFF), ulaw_decode(0x7F)) == (0xFF, 0, 0)
    assert (ulaw_decode(0x80), ulaw_decode(0x00)) == (32124, -32124)
    assert (alaw_encode(0), alaw_decode(0xD5), alaw_decode(0x55)) == (0xD5, 8, -8)
    assert (alaw_decode(0xAA), alaw_decode(0x2A)) == (32256, -32256)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop
        except ImportError:  # removed in Python 3.13; the values above still hold
            return
    every = array("h", range(-32768, 32768, 7))
    pcm = every.tobytes()
    assert bytes(ulaw_encode(x) for x in every) == audioop.lin2ulaw(pcm, 2)
    assert bytes(alaw_encode(x) for x in every) == audioop.lin2alaw(pcm, 2)
    codes = bytes(range(256))
    assert array("h", audioop.ulaw2lin(codes, 2)).tolist() == [ulaw_decode(b) for b in codes]
    assert array("h", audioop.alaw2lin(codes, 2)).tolist() == [alaw_decode(b) for b in codes]


# -- helpers -------------------------------------------------------------------


def sine(frequency: float, seconds: float, amplitude: int = 8192, phase: float = 0.0) -> list[int]:
    step = 2 * math.pi * frequency / RATE
    return [round(amplitude * math.sin(step * i + phase)) for i in range(round(seconds * RATE))]


def save(path: Path, samples: Sequence[int], rate: int = RATE) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(array("h", samples).tobytes())
    return path


def drop_packets(samples: list[int], lost: Sequence[int]) -> list[int]:
    """The stream without the 20 ms packets numbered in ``lost`` (a phase jump each)."""
    packet, gone = RATE // 50, set(lost)
    return [x for i, x in enumerate(samples) if i // packet not in gone]


# -- writing and reading -------------------------------------------------------


def test_write_tone_is_a_16_bit_mono_sine(tmp_path: Path) -> None:
    path = write_tone(tmp_path / "tone.wav", 1000, 2.0)
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, RATE)
        assert wav.getnframes() == 2 * RATE
    samples = read_wav_samples(path)
    assert max(samples) == 8192 and min(samples) == -8192
    assert rms(samples) == pytest.approx(8192 / math.sqrt(2), rel=1e-3)
    assert list(samples[:8]) == sine(1000, 0.001)  # 8 samples: sin(kπ/4)


def test_write_tone_refuses_what_cannot_be_a_tone(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Nyquist"):
        write_tone(tmp_path / "x.wav", 4000, 1.0)
    with pytest.raises(ValueError, match="amplitude"):
        write_tone(tmp_path / "x.wav", 1000, 1.0, amplitude=40000)


def test_read_wav_reads_a_file_libsndfile_has_not_closed(tmp_path: Path) -> None:
    """While the call is up, baresip's recording says RIFF size 8 and data size 0
    (seen in the lab: libsndfile fixes the sizes on close), and the wave module
    refuses it; read_wav reads the data to the end of the file, dropping a
    half-written sample."""
    done = write_tone(tmp_path / "done.wav", 1000, 1.0)
    raw = bytearray(done.read_bytes())
    assert raw[36:40] == b"data"
    struct.pack_into("<I", raw, 4, 8)
    struct.pack_into("<I", raw, 40, 0)
    open_file = tmp_path / "open.wav"
    open_file.write_bytes(bytes(raw) + b"\x01")
    with pytest.raises(wave.Error):
        wave.open(str(open_file)).close()
    assert read_wav_samples(open_file) == read_wav_samples(done)
    assert read_wav(open_file).seconds == 1.0


def test_read_wav_takes_the_first_channel_and_refuses_other_formats(tmp_path: Path) -> None:
    left, right = sine(1000, 0.1), sine(440, 0.1)
    stereo = tmp_path / "stereo.wav"
    with wave.open(str(stereo), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(
            array("h", [x for pair in zip(left, right, strict=True) for x in pair]).tobytes()
        )
    assert read_wav_samples(stereo).tolist() == left
    eight_bit = tmp_path / "u8.wav"
    with wave.open(str(eight_bit), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(1)
        out.setframerate(RATE)
        out.writeframes(bytes(100))
    with pytest.raises(ValueError, match="16-bit PCM"):
        read_wav(eight_bit)
    not_wav = tmp_path / "x.wav"
    not_wav.write_bytes(b"nothing here")
    with pytest.raises(ValueError, match="RIFF"):
        read_wav(not_wav)


# -- level and silence ---------------------------------------------------------


def test_silence_is_silence_in_both_laws() -> None:
    """Digital silence decodes to 0 (µ-law) or ±8 (A-law): silence either way;
    a quiet tone (-40 dBFS) is not."""
    assert rms([]) == 0.0
    assert is_silence([0] * RATE)
    assert is_silence(g711_round_trip([0] * RATE, "alaw"))
    assert is_silence([random.Random(1).randint(-30, 30) for _ in range(RATE)])
    assert not is_silence(sine(1000, 1.0, amplitude=330))
    assert dominant_frequency([0] * RATE, RATE) is None


def test_active_segment_is_the_longest_sounding_run() -> None:
    """Blocks are 20 ms (160 samples): a run that starts or ends inside a block
    takes in that whole block."""
    tone = sine(1000, 1.0)
    samples = [0] * 4000 + tone[:1920] + [0] * 800 + tone + [0] * 1600
    segment = active_segment(samples, RATE)
    assert list(segment) == tone
    shifted = [0] * 4050 + tone + [0] * 1600
    assert len(tone) <= len(active_segment(shifted, RATE)) <= len(tone) + 2 * 160
    assert len(active_segment([0] * RATE, RATE)) == 0
    assert list(active_segment(tone, RATE)) == tone


# -- the tone: found where it is, and only there --------------------------------


def test_a_1000_hz_tone_is_found(tmp_path: Path) -> None:
    result = find_tone(write_tone(tmp_path / "tone.wav", 1000, 3.0), 1000, 20)
    assert result.found, result
    assert result.frequency_hz is not None
    assert abs(result.frequency_hz - 1000) <= 1.0, result
    assert result.purity > 0.99, result
    assert result.seconds == result.active_seconds == 3.0
    assert repr(result).startswith("<tone found: expected 1000±20 Hz, dominant 1000.0 Hz")


@pytest.mark.parametrize("frequency", [300.0, 440.0, 697.0, 1000.0, 1633.0, 3400.0])
def test_dominant_frequency_within_a_hertz_across_the_band(frequency: float) -> None:
    found = dominant_frequency(sine(frequency, 1.0, phase=0.3), RATE)
    assert found is not None and abs(found - frequency) <= 1.0, found


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_the_tone_survives_a_g711_round_trip(tmp_path: Path, law: str) -> None:
    decoded = g711_round_trip(sine(1000, 3.0), law)
    result = find_tone(save(tmp_path / f"{law}.wav", decoded), 1000, 20)
    assert result.found, result
    assert result.purity > 0.99, result
    assert result.rms == pytest.approx(8192 / math.sqrt(2), rel=0.03)


@pytest.mark.parametrize("frequency", [1000.0, 1012.5])
def test_the_tone_survives_lost_packets_and_silence_around_it(
    tmp_path: Path, frequency: float
) -> None:
    """The first 10 packets lost (nothing recorded for them), 6 more lost in the
    middle, half a second of silence before the first and after the last
    packet: still the tone, just shorter. At 1000 Hz a 20 ms packet holds
    whole cycles, so a lost one leaves no trace; at 1012.5 Hz each loss is a
    quarter-cycle phase jump."""
    lost = [*range(10), 40, 41, 77, 90, 91, 120]
    stream = drop_packets(g711_round_trip(sine(frequency, 3.0), "ulaw"), lost)
    samples = [0] * 4000 + stream + [0] * 4000
    result = find_tone(save(tmp_path / "lossy.wav", samples), frequency, 20)
    assert result.found, result
    assert result.frequency_hz is not None
    assert abs(result.frequency_hz - frequency) <= 3.0, result
    assert result.active_seconds == pytest.approx(3.0 - len(lost) * 0.02, abs=0.02)
    assert result.seconds == pytest.approx(result.active_seconds + 1.0, abs=0.02)
    assert result.purity > 0.9, result


def test_another_tone_is_not_mistaken(tmp_path: Path) -> None:
    """The callee's own 440 Hz where the caller's 1000 Hz should be (audio from
    the wrong direction), and a tone just outside the tolerance."""
    wrong = find_tone(write_tone(tmp_path / "440.wav", 440, 2.0), 1000, 20)
    assert not wrong.found
    assert wrong.frequency_hz is not None and abs(wrong.frequency_hz - 440) <= 1.0
    assert repr(wrong).startswith("<tone NOT found: expected 1000±20 Hz, dominant 440.0 Hz")
    near = find_tone(write_tone(tmp_path / "1030.wav", 1030, 2.0), 1000, 20)
    assert not near.found, near


def test_silence_and_noise_are_not_the_tone(tmp_path: Path) -> None:
    """Silence (nothing decoded) fails on level; noise as loud as the tone (SRTP
    decoded as plain RTP, as a baresip that fell back sends) fails on purity
    even though its level is high."""
    quiet = find_tone(save(tmp_path / "silence.wav", [0] * 3 * RATE), 1000, 20)
    assert not quiet.found
    assert (quiet.frequency_hz, quiet.rms, quiet.active_seconds) == (None, 0.0, 0.0)
    assert "dominant n/a" in repr(quiet)
    noise_random = random.Random(5)
    noise = [ulaw_decode(noise_random.randrange(256)) for _ in range(3 * RATE)]
    noisy = find_tone(save(tmp_path / "noise.wav", noise), 1000, 20)
    assert noisy.rms > 50 * SILENCE_RMS
    assert not noisy.found, noisy
    assert noisy.purity < 0.1, noisy


def test_a_tone_too_short_is_not_enough(tmp_path: Path) -> None:
    short = find_tone(write_tone(tmp_path / "short.wav", 1000, 0.5), 1000, 20)
    assert not short.found, short
    assert find_tone(tmp_path / "short.wav", 1000, 20, min_seconds=0.4).found


def test_purity_tells_a_sine_from_a_square_wave(tmp_path: Path) -> None:
    """peers.write_wav's 500 Hz square wave: its fundamental carries 8/π² of its
    energy, a sine all of it; a mixture of two equal tones half each."""
    square = read_wav_samples(write_wav(tmp_path / "square.wav", 1.0))
    assert dominant_frequency(square, RATE) == pytest.approx(500, abs=1)
    assert tone_purity(square, RATE, 500) == pytest.approx(8 / math.pi**2, abs=0.02)
    assert tone_purity(sine(500, 1.0), RATE, 500) > 0.99
    both = [a + b for a, b in zip(sine(1000, 1.0, 6000), sine(440, 1.0, 5000), strict=True)]
    assert dominant_frequency(both, RATE) == pytest.approx(1000, abs=1)
    assert tone_purity(both, RATE, 1000) == pytest.approx(36 / 61, abs=0.03)


def test_sndfile_recordings_by_direction(tmp_path: Path) -> None:
    """baresip 1.0's names (local time to the second, then enc or dec); later
    versions' (cname=>peer first) match too."""
    names = [
        "dump-2026-11-29-21-13-07-dec.wav",
        "dump-2026-11-29-21-13-07-enc.wav",
        "dump-sip:b@127.0.0.1=>sip:a@127.0.0.1-2026-11-29-21-13-09-dec.wav",
        "other.wav",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    decoded = [p.name for p in sndfile_recordings(tmp_path)]
    assert sorted(decoded) == sorted([names[0], names[2]])
    assert [p.name for p in sndfile_recordings(tmp_path, "enc")] == [names[1]]
    with pytest.raises(ValueError, match="dec"):
        sndfile_recordings(tmp_path, "both")


def test_checks_are_fast(tmp_path: Path) -> None:
    """Ten seconds of recording are judged in well under a second."""
    path = save(tmp_path / "long.wav", g711_round_trip(sine(1000, 10.0), "ulaw"))
    started = time.perf_counter()
    assert find_tone(path, 1000).found
    assert time.perf_counter() - started < 1.0
