"""Audio for the media tests with real peers: a sine tone for baresip's ``aufile``
to play, and the checks that find that tone in what baresip's ``sndfile`` module
recorded at the other end.

Pure Python (no numpy): the recordings are a few seconds of 8 kHz mono, which
the checks below read in well under a second.

Why these checks prove that media flowed: a phone that received nothing, or
SRTP it could not authenticate, records silence (or no file at all); one that
decoded RTP it should have rejected, or audio from the wrong direction, records
noise or another tone. So the recording must be loud enough, its dominant
frequency must be the caller's tone, and most of its energy must be at that
frequency (:attr:`ToneResult.purity`).

How a call's audio reaches the file (baresip 1.0): the caller's ``aufile``
source is encoded to G.711 (8 kHz, 8 bits), sent as SRTP, decrypted and
decoded by the callee, and ``sndfile`` writes the decoded 16-bit samples to
``dump-<local time>-dec.wav`` in its ``snd_path`` as they arrive (and what the
callee itself sends to ``...-enc.wav``). G.711 quantization keeps a sine's
frequency exactly and adds noise some 35-40 dB below it; lost packets shorten
the recording or put a phase jump in it; the first packets of a call may be
missing or arrive before the answer. The checks are built to shrug all of
that off.
"""

from __future__ import annotations

import math
import struct
import sys
import wave
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: The amplitude of :func:`write_tone`'s sine by default: a quarter of full
#: scale (about -12 dBFS), far from clipping in G.711 (whose largest value is
#: ±32124 for µ-law) yet far above its quantization noise.
DEFAULT_AMPLITUDE = 8192

#: A block whose RMS is below this is silence. Digital silence decodes to 0
#: (µ-law) or ±8 (A-law); low-level noise around zero stays well under it. A
#: tone of the default amplitude has an RMS of ~5800 (-40 dBFS: ~230).
SILENCE_RMS = 100.0

#: The length of the blocks that :func:`active_segment` classifies, in seconds:
#: one G.711 packet (20 ms), so a lost packet costs one block.
BLOCK_SECONDS = 0.02

#: Default lowest and highest frequency :func:`dominant_frequency` considers:
#: G.711's telephone band.
LOW_HZ = 100.0
HIGH_HZ = 3800.0

#: Coarse scan step, and the length of the blocks it scans (Hann window): the
#: window's main lobe (±2 bins) is wider than the step, so the true peak can
#: not fall between two candidates unseen.
_COARSE_STEP_HZ = 10.0
_COARSE_BLOCK_SECONDS = 0.1
#: Fine scan: 0.5 Hz steps over ±15 Hz around the coarse peak, on up to a
#: second of audio.
_FINE_STEP_HZ = 0.5
_FINE_SPAN_HZ = 15.0
_FINE_MAX_SECONDS = 1.0


def write_tone(
    path: Path,
    frequency_hz: float,
    seconds: float,
    *,
    rate: int = 8000,
    amplitude: int = DEFAULT_AMPLITUDE,
) -> Path:
    """Write a mono 16-bit PCM WAV of a pure sine and return ``path``.

    A sine rather than a square wave (``peers.write_wav``): a square wave
    carries only 8/π² of its energy at its fundamental, the rest in odd
    harmonics, which blurs a frequency and purity check. For baresip 1.0's
    ``aufile``, ``rate`` must be 8000 with G.711: it refuses any other rate
    ("aufile: input file ... must have sample-rate 8000 Hz"), and the callee
    then never answers. The file must outlast the call: aufile ends the call
    when the file ends.
    """
    if not 0 < frequency_hz < rate / 2:
        raise ValueError(f"{frequency_hz} Hz is not below the Nyquist frequency of {rate} Hz")
    if not 0 < amplitude <= 32767:
        raise ValueError(f"amplitude {amplitude} is not in 1..32767")
    count = round(seconds * rate)
    step = 2 * math.pi * frequency_hz / rate
    samples = array("h", (round(amplitude * math.sin(step * i)) for i in range(count)))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(_little_endian(samples).tobytes())
    return path


@dataclass(frozen=True)
class Recording:
    """The samples of a WAV file's first channel, and its sample rate."""

    samples: array[int]
    rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate


def read_wav(path: Path) -> Recording:
    """Read a 16-bit PCM WAV, tolerating a header its writer has not finished.

    libsndfile (behind baresip's ``sndfile``) writes the sizes in the RIFF
    header only when it closes the file, at the end of the call; until then
    the RIFF size says 8 and the data size 0, and :mod:`wave` refuses the
    file ("fmt chunk and/or data chunk missing"). So the ``data`` chunk is
    read to the end of the file when its size is 0 or larger than what is
    there, and a trailing half sample is dropped. Multi-channel files give
    their first channel.
    """
    raw = path.read_bytes()
    if len(raw) < 12 or raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise ValueError(f"{path} is not a RIFF/WAVE file")
    offset = 12
    fmt: tuple[int, int, int, int] | None = None
    while offset + 8 <= len(raw):
        chunk_id = raw[offset : offset + 4]
        (size,) = struct.unpack_from("<I", raw, offset + 4)
        body = offset + 8
        if chunk_id == b"fmt ":
            tag, channels, rate = struct.unpack_from("<HHI", raw, body)
            (bits,) = struct.unpack_from("<H", raw, body + 14)
            if tag == 0xFFFE and size >= 40:  # WAVE_FORMAT_EXTENSIBLE: the subformat's tag
                (tag,) = struct.unpack_from("<H", raw, body + 24)
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise ValueError(f"{path}: data chunk before the fmt chunk")
            tag, channels, rate, bits = fmt
            if (tag, bits) != (1, 16) or channels < 1:
                raise ValueError(
                    f"{path}: format tag {tag}, {bits} bits, {channels} channels;"
                    " only 16-bit PCM is read"
                )
            end = len(raw) if size == 0 or body + size > len(raw) else body + size
            usable = (end - body) // (2 * channels) * (2 * channels)
            samples = _little_endian(array("h", raw[body : body + usable]))
            if channels > 1:
                samples = samples[::channels]
            return Recording(samples, rate)
        offset = body + size + (size & 1)
    raise ValueError(f"{path} has no data chunk")


def read_wav_samples(path: Path) -> array[int]:
    """The samples of a 16-bit PCM WAV (first channel), as :func:`read_wav` reads them."""
    return read_wav(path).samples


def rms(samples: Sequence[int]) -> float:
    """The root mean square of ``samples`` (0.0 for none): a sine of amplitude A
    has an RMS of A/√2."""
    if not samples:
        return 0.0
    return math.sqrt(math.fsum(x * x for x in samples) / len(samples))


def is_silence(samples: Sequence[int], threshold: float = SILENCE_RMS) -> bool:
    """Whether ``samples`` are silence: an RMS below ``threshold`` (see :data:`SILENCE_RMS`)."""
    return rms(samples) < threshold


def active_segment(
    samples: Sequence[int], rate: int, threshold: float = SILENCE_RMS
) -> Sequence[int]:
    """The longest run of 20 ms blocks that are not silence (empty if all are).

    A recording may begin or end with silence (before the first packet, after
    the last), and a stream may pause; analysing only the longest sounding run
    keeps those from diluting the level and the frequency estimate.
    """
    block = max(1, round(rate * BLOCK_SECONDS))
    best_start = best_end = start = 0
    running = False
    for begin in range(0, len(samples), block):
        loud = rms(samples[begin : begin + block]) >= threshold
        if loud and not running:
            start, running = begin, True
        elif not loud and running:
            running = False
            if begin - start > best_end - best_start:
                best_start, best_end = start, begin
    if running and len(samples) - start > best_end - best_start:
        best_start, best_end = start, len(samples)
    return samples[best_start:best_end]


def goertzel_power(samples: Sequence[float], rate: int, frequency_hz: float) -> float:
    """|X(f)|², the squared magnitude of the samples' DTFT at ``frequency_hz``.

    The Goertzel recurrence: one multiply and two adds a sample, for any
    frequency (not only FFT bins).
    """
    coefficient = 2.0 * math.cos(2.0 * math.pi * frequency_hz / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coefficient * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coefficient * s1 * s2


def _hann(samples: Sequence[int]) -> list[float]:
    n = len(samples)
    if n < 2:
        return [float(x) for x in samples]
    scale = 2.0 * math.pi / (n - 1)
    return [x * (0.5 - 0.5 * math.cos(scale * i)) for i, x in enumerate(samples)]


def _frange(low: float, high: float, step: float) -> list[float]:
    count = math.floor((high - low) / step + 1e-9) + 1
    return [low + i * step for i in range(max(count, 0))]


def dominant_frequency(
    samples: Sequence[int],
    rate: int,
    *,
    low_hz: float = LOW_HZ,
    high_hz: float = HIGH_HZ,
) -> float | None:
    """The frequency with the most energy between ``low_hz`` and ``high_hz``, to
    about 1 Hz; None when there is no sound (:func:`active_segment` is shorter
    than one 100 ms block).

    A coarse scan in 10 Hz steps of the Goertzel power of Hann-windowed 100 ms
    blocks (summed over up to five blocks spread over the segment, so a lost
    packet or a glitch in one block does not decide), then a fine scan in
    0.5 Hz steps around the peak over up to one second. Goertzel over
    candidates rather than zero crossings: crossings miscount on noise,
    gaps and a second tone; a spectral peak does not.
    """
    segment = active_segment(samples, rate)
    block = round(rate * _COARSE_BLOCK_SECONDS)
    if len(segment) < block:
        return None
    high_hz = min(high_hz, rate / 2 - _COARSE_STEP_HZ)
    count = min(5, len(segment) // block)
    stride = (len(segment) - block) // max(count - 1, 1)
    blocks = [_hann(segment[i * stride : i * stride + block]) for i in range(count)]
    candidates = _frange(low_hz, high_hz, _COARSE_STEP_HZ)
    coarse = max(candidates, key=lambda f: sum(goertzel_power(b, rate, f) for b in blocks))
    middle = len(segment) // 2
    half = min(len(segment), round(rate * _FINE_MAX_SECONDS)) // 2
    fine_block = _hann(segment[middle - half : middle + half])
    fine = _frange(
        max(low_hz, coarse - _FINE_SPAN_HZ), min(high_hz, coarse + _FINE_SPAN_HZ), _FINE_STEP_HZ
    )
    return max(fine, key=lambda f: goertzel_power(fine_block, rate, f))


def tone_purity(samples: Sequence[int], rate: int, frequency_hz: float) -> float:
    """The share of the energy of ``samples`` that a sine at ``frequency_hz``
    accounts for: ~1.0 for a clean sine (above 0.99 after G.711), 8/π² ≈ 0.81 for
    a square wave at its fundamental, 0.9-0.95 when lost packets put phase
    jumps in it, near 0 for noise or another tone.

    Measured on 100 ms blocks (a frequency off by 1 Hz loses little there)
    and averaged: 2·|X(f)|² / (N · Σx²) per block, the least-squares sine's
    power over the block's power.
    """
    block = round(rate * _COARSE_BLOCK_SECONDS)
    shares = []
    for begin in range(0, len(samples) - block + 1, block):
        part = samples[begin : begin + block]
        energy = math.fsum(x * x for x in part)
        if energy > 0:
            shares.append(2.0 * goertzel_power(part, rate, frequency_hz) / (block * energy))
    return min(1.0, math.fsum(shares) / len(shares)) if shares else 0.0


@dataclass(frozen=True)
class ToneResult:
    """What :func:`find_tone` found in a recording; ``found`` says whether it
    is the expected tone. Its repr is written for assertion messages:
    ``assert result.found, result``."""

    path: Path
    expected_hz: float
    tolerance_hz: float
    frequency_hz: float | None
    rms: float
    purity: float
    seconds: float
    active_seconds: float
    min_seconds: float
    min_purity: float

    @property
    def found(self) -> bool:
        """The tone is there: loud enough, long enough, at the right frequency, and clean."""
        return (
            self.frequency_hz is not None
            and abs(self.frequency_hz - self.expected_hz) <= self.tolerance_hz
            and self.rms >= SILENCE_RMS
            and self.active_seconds >= self.min_seconds
            and self.purity >= self.min_purity
        )

    def __repr__(self) -> str:
        found = "n/a" if self.frequency_hz is None else f"{self.frequency_hz:.1f} Hz"
        verdict = "found" if self.found else "NOT found"
        return (
            f"<tone {verdict}: expected {self.expected_hz:g}±{self.tolerance_hz:g} Hz,"
            f" dominant {found}, purity {self.purity:.2f} (min {self.min_purity:g}),"
            f" rms {self.rms:.0f} (silence < {SILENCE_RMS:g}),"
            f" {self.active_seconds:.2f}s sounding of {self.seconds:.2f}s"
            f" (min {self.min_seconds:g}s) in {self.path}>"
        )

    __str__ = __repr__


def find_tone(
    path: Path,
    frequency_hz: float,
    tolerance_hz: float = 20.0,
    *,
    min_seconds: float = 1.0,
    min_purity: float = 0.5,
) -> ToneResult:
    """Look for a sine at ``frequency_hz`` in the WAV at ``path``.

    The level (:attr:`ToneResult.rms`), frequency and purity are measured on
    the longest sounding stretch (:func:`active_segment`), which must last
    ``min_seconds``. ``min_purity`` 0.5 accepts a G.711 round trip with a few
    lost packets and rejects noise, silence and other tones (see
    :func:`tone_purity`).
    """
    recording = read_wav(path)
    segment = active_segment(recording.samples, recording.rate)
    found = dominant_frequency(recording.samples, recording.rate)
    return ToneResult(
        path=path,
        expected_hz=frequency_hz,
        tolerance_hz=tolerance_hz,
        frequency_hz=found,
        rms=rms(segment),
        purity=tone_purity(segment, recording.rate, found) if found is not None else 0.0,
        seconds=recording.seconds,
        active_seconds=len(segment) / recording.rate,
        min_seconds=min_seconds,
        min_purity=min_purity,
    )


def sndfile_recordings(directory: Path, direction: str = "dec") -> list[Path]:
    """The WAV files baresip's ``sndfile`` wrote in ``directory`` (its ``snd_path``)
    for ``direction``, oldest first.

    ``dec``: the audio the phone received and decoded (what the far end sent);
    ``enc``: what it encoded and sent (its own source). baresip 1.0 names them
    ``dump-YYYY-MM-DD-HH-MM-SS-dec.wav`` (local time when the first frame
    passed, one-second resolution: two phones sharing a ``snd_path``, or two
    calls of one phone within a second, would write the same file, so give
    each phone its own directory); later versions put ``<cname>=><peer>-``
    before the time. Sorted by modification time.
    """
    if direction not in ("dec", "enc"):
        raise ValueError(f"direction is 'dec' or 'enc', not {direction!r}")
    return sorted(directory.glob(f"dump-*-{direction}.wav"), key=lambda p: p.stat().st_mtime)


def _little_endian(samples: array[int]) -> array[int]:
    """``samples`` in WAV's byte order (a copy, byte-swapped on big-endian hosts)."""
    copy = array("h", samples)
    if sys.byteorder == "big":
        copy.byteswap()
    return copy
