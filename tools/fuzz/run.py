"""Run one fuzz target under atheris (coverage-guided, libFuzzer), or replay inputs.

    python -m tools.fuzz.run --list
    python -m tools.fuzz.run NAME [--seconds 180] [--work DIR] [-- LIBFUZZER_ARGS...]
    python -m tools.fuzz.run NAME --replay FILE [FILE...]
    python -m tools.fuzz.run NAME --no-atheris --seconds 60     # random mutation only

The corpus lives in WORK/NAME/corpus (seeded from the target's seeds on every run), crash
inputs in WORK/NAME/crash-*. Only the meshcomm and radios packages are instrumented.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType

DEFAULT_WORK = Path(__file__).resolve().parent / "work"
MAX_INPUT_BYTES = 8192
PER_INPUT_TIMEOUT_S = 10
RSS_LIMIT_MB = 2048


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(prog="python -m tools.fuzz.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?")
    parser.add_argument("--list", action="store_true", help="list the targets")
    parser.add_argument("--seconds", type=int, default=180, help="total fuzzing time")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--replay", nargs="+", type=Path, metavar="FILE")
    parser.add_argument("--no-atheris", action="store_true",
                        help="random mutation of the seeds, without coverage feedback")
    return parser.parse_args(argv), extra


def _write_seeds(corpus: Path, seeds: list[bytes]) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        name = "seed-" + hashlib.sha1(seed).hexdigest()[:16]
        (corpus / name).write_bytes(seed[:MAX_INPUT_BYTES])


def _replay(targets: ModuleType, name: str, files: list[Path]) -> int:
    entry = targets.TARGETS[name].entry
    failed = 0
    for path in files:
        try:
            entry(path.read_bytes())
        except Exception:
            failed += 1
            print(f"CRASH {path}", file=sys.stderr)
            traceback.print_exc()
        else:
            print(f"ok    {path}")
    return 1 if failed else 0


def _random_loop(targets: ModuleType, name: str, seconds: int, work: Path) -> int:
    from tools.fuzz.mutate import mutants

    target = targets.TARGETS[name]
    seeds = target.seeds()
    deadline = time.monotonic() + seconds
    runs = 0
    for data in mutants(seeds, 10**9, seed=int(time.time())):
        if time.monotonic() > deadline:
            break
        runs += 1
        try:
            target.entry(data)
        except Exception:
            crash = work / name / ("crash-" + hashlib.sha1(data).hexdigest())
            crash.parent.mkdir(parents=True, exist_ok=True)
            crash.write_bytes(data)
            traceback.print_exc()
            print(f"crash input written to {crash} after {runs} runs", file=sys.stderr)
            return 1
    print(f"{name}: {runs} runs, no crash")
    return 0


def main(argv: list[str] | None = None) -> int:
    args, extra = _parse(sys.argv[1:] if argv is None else argv)
    if args.list or not args.name or args.replay or args.no_atheris:
        from tools.fuzz import targets
        if args.list or not args.name:
            for t in targets.TARGETS.values():
                print(f"{t.name:24} {t.contract}")
            return 0
        if args.replay:
            return _replay(targets, args.name, args.replay)
        return _random_loop(targets, args.name, args.seconds, args.work)
    import atheris  # type: ignore[import-untyped]  # not a dependency: pip install atheris

    with atheris.instrument_imports(include=["meshcomm", "radios", "tools.fuzz"]):
        from tools.fuzz import targets
    target = targets.TARGETS[args.name]
    work = args.work / args.name
    corpus = work / "corpus"
    _write_seeds(corpus, target.seeds())
    flags = [f"-max_total_time={args.seconds}", f"-max_len={MAX_INPUT_BYTES}",
             f"-timeout={PER_INPUT_TIMEOUT_S}", f"-rss_limit_mb={RSS_LIMIT_MB}",
             f"-artifact_prefix={work}/", "-print_final_stats=1", *extra, str(corpus)]
    atheris.Setup([sys.argv[0], *flags], target.entry)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
