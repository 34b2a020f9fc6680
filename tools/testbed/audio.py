"""Test audio in plain Python: distinct test signals as WAV, and how well a recording matches.

:func:`write_test_signal` writes a mono 16-bit WAV of random tone glides (each segment sweeps
between two random frequencies of the telephone band, phase-continuous, random level): no
period, so alignment by cross-correlation is unambiguous, and two seeds give two signals that
do not correlate with each other.

:func:`match` measures how well ``received`` (what one end recorded) reproduces ``sent``
(what the other end sent). Packet audio can lose or repeat whole frames, which shifts the
rest of the recording by a frame; so the recording is cut into blocks, each block is aligned
by cross-correlation (first around the previous block's lag, in whole-frame steps plus a few
samples; if that does not fit, over the whole signal with an FFT; a block that still fits
poorly, a frame lost or repeated inside it, is aligned again in halves), and the pooled
correlation of all aligned pieces is reported. No numpy: a radix-2 FFT in Python is fast
enough for the first alignment, and the per-block search is a handful of dot products.
"""

from __future__ import annotations

import cmath
import math
import random
import struct
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Final

SAMPLE_RATE_HZ: Final = 8000
SAMPLE_WIDTH_BYTES: Final = 2
FULL_SCALE: Final = 32767
LOW_HZ: Final = 300.0
HIGH_HZ: Final = 3400.0
SEGMENT_S: Final = 0.25
MIN_LEVEL: Final = 0.2
MAX_LEVEL: Final = 0.5
#: Block length used by :func:`match` (s).
BLOCK_S: Final = 0.5
#: One RTP frame of 20 ms at 8 kHz: the step of the local search.
FRAME_SAMPLES: Final = 160
#: The local search tries lags previous + k*FRAME_SAMPLES + d for |k| <= this ...
LOCAL_FRAMES: Final = 6
#: ... and |d| <= this.
LOCAL_SAMPLES: Final = 2
#: A block whose local best correlation is below this is searched over the whole signal.
LOCAL_FIT: Final = 0.6
#: A block that fits this well at the previous lag is not searched further.
GOOD_FIT: Final = 0.9
#: Blocks whose energy is below this fraction of the mean block energy are skipped (gaps).
SILENT_BLOCK_RATIO: Final = 0.01


def tone_glides(seed: int, duration_s: float, rate_hz: int = SAMPLE_RATE_HZ) -> list[int]:
    """Random phase-continuous tone glides, 16-bit samples (see the module docstring)."""
    rng = random.Random(seed)
    samples: list[int] = []
    phase = 0.0
    total = int(duration_s * rate_hz)
    per_segment = int(SEGMENT_S * rate_hz)
    while len(samples) < total:
        f0, f1 = rng.uniform(LOW_HZ, HIGH_HZ), rng.uniform(LOW_HZ, HIGH_HZ)
        level = rng.uniform(MIN_LEVEL, MAX_LEVEL) * FULL_SCALE
        for n in range(per_segment):
            freq = f0 + (f1 - f0) * n / per_segment
            phase += 2 * math.pi * freq / rate_hz
            samples.append(int(level * math.sin(phase)))
    return samples[:total]


def write_wav(path: Path, samples: list[int], rate_hz: int = SAMPLE_RATE_HZ) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(SAMPLE_WIDTH_BYTES)
        out.setframerate(rate_hz)
        out.writeframes(struct.pack(f"<{len(samples)}h", *samples))


def write_test_signal(path: Path, seed: int, duration_s: float) -> list[int]:
    samples = tone_glides(seed, duration_s)
    write_wav(path, samples)
    return samples


def read_wav(path: Path) -> tuple[list[int], int]:
    """(samples of the first channel, sample rate) of a 16-bit PCM WAV."""
    with wave.open(str(path), "rb") as src:
        if src.getsampwidth() != SAMPLE_WIDTH_BYTES:
            raise ValueError(f"{path}: only 16-bit PCM is supported")
        channels, rate = src.getnchannels(), src.getframerate()
        raw = src.readframes(src.getnframes())
    values = struct.unpack(f"<{len(raw) // 2}h", raw[:len(raw) // 2 * 2])
    return list(values[::channels]), rate


# -- correlation ------------------------------------------------------------------------------


def _fft(values: list[complex], inverse: bool = False) -> list[complex]:
    """Iterative radix-2 FFT; len(values) must be a power of two."""
    n = len(values)
    out = list(values)
    j = 0
    for i in range(1, n):
        bit = n >> 1
        while j & bit:
            j ^= bit
            bit >>= 1
        j |= bit
        if i < j:
            out[i], out[j] = out[j], out[i]
    size = 2
    sign = 1 if inverse else -1
    while size <= n:
        step = cmath.exp(sign * 2j * math.pi / size)
        half = size // 2
        twiddles = [step ** k for k in range(half)]
        for start in range(0, n, size):
            for k in range(half):
                a, b = out[start + k], out[start + k + half] * twiddles[k]
                out[start + k], out[start + k + half] = a + b, a - b
        size *= 2
    if inverse:
        out = [v / n for v in out]
    return out


def best_lag_fft(block: list[int], reference: list[int]) -> int:
    """The offset in ``reference`` where ``block`` fits best (maximum cross-correlation)."""
    size = 1
    while size < len(reference) + len(block):
        size *= 2
    ref_f = _fft([complex(v) for v in reference] + [0j] * (size - len(reference)))
    blk_f = _fft([complex(v) for v in block] + [0j] * (size - len(block)))
    xcorr = _fft([r * b.conjugate() for r, b in zip(ref_f, blk_f, strict=True)], inverse=True)
    limit = max(1, len(reference) - len(block) + 1)
    return max(range(limit), key=lambda lag: xcorr[lag].real)


def _dot(a: list[int], b: list[int]) -> float:
    return float(sum(x * y for x, y in zip(a, b, strict=True)))


def pearson(a: list[int], b: list[int]) -> float:
    """Correlation coefficient of two equally long sample lists (0 for silence)."""
    n = len(a)
    if n == 0:
        return 0.0
    mean_a, mean_b = sum(a) / n, sum(b) / n
    num = sum((x - mean_a) * (y - mean_b) for x, y in zip(a, b, strict=True))
    den = math.sqrt(sum((x - mean_a) ** 2 for x in a) * sum((y - mean_b) ** 2 for y in b))
    return num / den if den else 0.0


@dataclass(frozen=True, slots=True)
class Match:
    """Result of :func:`match`."""

    correlation: float          # pooled over the aligned blocks
    blocks: int                 # blocks compared
    skipped_blocks: int         # near-silent blocks of the recording (gaps) not compared
    first_lag_samples: int      # where the recording starts in the sent signal
    lag_changes: int            # how often the alignment moved between blocks
    received_s: float           # length of the recording

    def as_dict(self) -> dict[str, float | int]:
        return {"correlation": round(self.correlation, 4), "blocks": self.blocks,
                "skipped_blocks": self.skipped_blocks,
                "first_lag_samples": self.first_lag_samples, "lag_changes": self.lag_changes,
                "received_s": round(self.received_s, 2)}


def _local_lag(block: list[int], sent: list[int], previous: int) -> tuple[int, float]:
    if previous + len(block) <= len(sent):
        corr = pearson(block, sent[previous:previous + len(block)])
        if corr >= GOOD_FIT:
            return previous, corr
    best_lag, best_corr = previous, -2.0
    for k in range(-LOCAL_FRAMES, LOCAL_FRAMES + 1):
        for d in range(-LOCAL_SAMPLES, LOCAL_SAMPLES + 1):
            lag = previous + k * FRAME_SAMPLES + d
            if lag < 0 or lag + len(block) > len(sent):
                continue
            corr = pearson(block, sent[lag:lag + len(block)])
            if corr > best_corr:
                best_lag, best_corr = lag, corr
    return best_lag, best_corr


def match(sent: list[int], received: list[int], rate_hz: int = SAMPLE_RATE_HZ) -> Match:
    """How well ``received`` reproduces ``sent`` (see the module docstring)."""
    size = int(BLOCK_S * rate_hz)
    blocks = [received[i:i + size] for i in range(0, len(received) - size + 1, size)]
    energies = [_dot(b, b) for b in blocks]
    mean_energy = sum(energies) / len(energies) if energies else 0.0
    offset: int | None = None  # lag of a block in ``sent`` minus its start in ``received``
    first_lag, changes, skipped = 0, 0, 0
    num = den_a = den_b = 0.0
    for index, (block, energy) in enumerate(zip(blocks, energies, strict=True)):
        if energy < SILENT_BLOCK_RATIO * mean_energy:
            skipped += 1
            continue
        corr = -2.0
        if offset is not None:
            lag, corr = _local_lag(block, sent, max(0, offset + index * size))
        if corr < LOCAL_FIT:
            lag = best_lag_fft(block, sent)
        start = index * size
        pieces = [(start, block, lag)]
        if pearson(block, sent[lag:lag + size]) < GOOD_FIT:
            # A frame lost or repeated inside the block: align its halves one by one.
            half = size // 2
            pieces = [(start + at, part, _local_lag(part, sent, lag + at)[0])
                      for at, part in ((0, block[:half]), (half, block[half:]))]
        for piece_start, piece, piece_lag in pieces:
            if offset is None:
                first_lag = piece_lag - piece_start
            elif piece_lag - piece_start != offset:
                changes += 1
            offset = piece_lag - piece_start
            ref = sent[piece_lag:piece_lag + len(piece)]
            if len(ref) < len(piece):
                continue
            num += _dot(piece, ref)
            den_a += _dot(piece, piece)
            den_b += _dot(ref, ref)
    correlation = num / math.sqrt(den_a * den_b) if den_a and den_b else 0.0
    return Match(correlation, len(blocks) - skipped, skipped, first_lag, changes,
                 len(received) / rate_hz)
