"""A small deterministic byte mutator (no coverage feedback).

Used by the CI smoke test (tests/tools/test_fuzz_smoke.py) to push a few hundred mutants
of each target's seeds through its entry function, and by ``run.py --no-atheris`` on a
machine without atheris. Coverage-guided fuzzing is atheris's job (see README.md).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

#: Values that tend to sit on boundaries of the formats we read.
INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xC0, 0xC1, 0xFF, 0x0A, 0x0D, 0x20, 0x3A, 0x3B)
TOKENS = (b"\r\n", b"\r\n\r\n", b":", b";", b",", b"<", b">", b"@", b"=", b"\"", b"%00",
          b"\xc1", b"\xdc\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xcf\xff\xff\xff\xff\xff\xff\xff",
          b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00", b"9999999999", b"-1", b"\xed\xa0\x80",
          b"\n--fuzz-next--\n")
MAX_MUTANT_BYTES = 16384


def mutate(data: bytes, rng: random.Random, others: Sequence[bytes] = ()) -> bytes:
    """One to four random edits of ``data``."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        pos = rng.randint(0, len(buf))
        if op == 0 and buf:
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[rng.randrange(len(buf))] = rng.choice(INTERESTING_BYTES)
        elif op == 2:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3 and buf:
            end = min(len(buf), pos + rng.randint(1, 32))
            del buf[pos:end]
        elif op == 4 and buf:
            start = rng.randrange(len(buf))
            chunk = buf[start:start + rng.randint(1, 64)]
            buf[pos:pos] = chunk * rng.randint(1, 4)
        elif op == 5 and others:
            other = rng.choice(others)
            cut = rng.randint(0, len(other))
            buf = buf[:pos] + bytearray(other[cut:])
        elif op == 6:
            buf[pos:pos] = rng.choice(TOKENS)
        else:
            del buf[pos:]
    return bytes(buf[:MAX_MUTANT_BYTES])


def mutants(seeds: Sequence[bytes], count: int, seed: int = 0) -> Iterator[bytes]:
    """``count`` mutants of ``seeds`` (deterministic for a given ``seed``)."""
    rng = random.Random(seed)
    pool = list(seeds) or [b""]
    for _ in range(count):
        yield mutate(rng.choice(pool), rng, pool)
