"""``meshcomm journal verify FILE...``: a verdict per node journal, and an exit status.

Each file gets one line: ``ok``, ``TAMPERED`` (entries edited, removed, reordered, a bad
checkpoint) or ``UNREADABLE`` (not a journal, damaged database, no such file), with the
number of entries and checkpoints and the first problem named by its entry sequence number;
up to :data:`MAX_LISTED_PROBLEMS` further problems follow, indented. ``--json`` prints one
JSON object per file in a list instead.

Checkpoint signatures are checked with the node's public key: one of the ``--key`` values
whose SHA-256 is the node id the journal names, else the public key of an ``identity.key``
next to the journal (a node's data dir) if it is that node's. When ``--key`` is given and
none is the journal's node, that is a problem (the journal is another node's). Without a
key, checkpoints are checked for structure only, and the verdict says so.

Exit status: 0 every file ok, 1 any file tampered or unreadable, 2 usage error.
``python -m meshcomm.journal.verify FILE...`` is the same command.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from meshcomm.errors import ConfigError
from meshcomm.journal.verify import (
    DATABASE_ERROR_PREFIX,
    Problem,
    VerifyReport,
    journal_owner,
    readable_journal,
    verify_journal,
)
from meshcomm.security.identity import fingerprint, node_id_of
from meshcomm.security.keystore import IDENTITY_FILE, read_key_file
from meshcomm.types import PUBLIC_KEY_LEN

EXIT_OK: Final = 0
EXIT_BAD: Final = 1
EXIT_USAGE: Final = 2
#: Problems listed per file after the first (the count is always given in full).
MAX_LISTED_PROBLEMS: Final = 10


@dataclass(frozen=True, slots=True)
class Verdict:
    """What ``journal verify`` concludes about one file."""

    path: Path
    verdict: str                       # "ok", "tampered" or "unreadable"
    report: VerifyReport | None        # None when the file could not be opened at all
    key: bytes | None                  # the public key checkpoints were checked with
    key_source: str | None             # "--key" or the identity.key path
    reason: str | None = None          # why unreadable / why the key is refused

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``journal`` with its action ``verify``."""
    journal = subparsers.add_parser("journal", help="work with node journals",
                                    description="Work with node journal files.")
    sub = journal.add_subparsers(dest="journal_command", metavar="ACTION", required=True)
    verify = sub.add_parser("verify", help="check journals for tampering",
                            description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_verify_arguments(verify)
    verify.set_defaults(handler=run_verify)


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", metavar="FILE", nargs="+", type=Path,
                        help="a journal file (journal.sqlite in a node's data dir)")
    parser.add_argument("--key", metavar="HEX", action="append", default=[], dest="keys",
                        type=_public_key, help="a node public key (64 hex digits) to check "
                                               "checkpoint signatures with; repeatable")
    parser.add_argument("--json", action="store_true", help="print a JSON list")


def _public_key(text: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != PUBLIC_KEY_LEN:
        raise argparse.ArgumentTypeError(f"{text!r}: expected {2 * PUBLIC_KEY_LEN} hex digits "
                                         "(a node public key)")
    return key


def _key_beside(path: Path, owner: bytes) -> tuple[bytes, str] | None:
    """The public key of an identity.key next to the journal, if it is the owner's."""
    beside = path.parent / IDENTITY_FILE
    if not beside.is_file():
        return None
    try:
        public = bytes(read_key_file(beside).public_key)
    except ConfigError:
        return None
    return (public, str(beside)) if node_id_of(public) == owner else None


def _choose_key(readable: Path, path: Path, keys: Sequence[bytes]) \
        -> tuple[bytes | None, str | None, str | None]:
    """(key, where it came from, problem) for checking the checkpoints of the journal at
    ``path`` (read from ``readable``, the same file or a copy of it)."""
    owner = journal_owner(readable)
    if owner is None:
        return None, None, None
    for key in keys:
        if node_id_of(key) == owner:
            return key, "--key", None
    if keys:
        return None, None, (f"the journal is node {owner.hex()[:16]}'s, which none of the "
                            "given --key values is")
    found = _key_beside(path, owner)
    return (found[0], found[1], None) if found is not None else (None, None, None)


def verify_file(path: Path, keys: Sequence[bytes]) -> Verdict:
    """Verify one journal file; never raises for a bad or missing file."""
    if not path.exists():
        return Verdict(path, "unreadable", None, None, None, "no such file")
    if not path.is_file():
        return Verdict(path, "unreadable", None, None, None, "not a regular file")
    try:
        with readable_journal(path) as readable:     # a copy if read-only media need one
            key, source, key_problem = _choose_key(readable, path, keys)
            report = verify_journal(readable, key)
    except OSError as exc:
        return Verdict(path, "unreadable", None, None, None, exc.strerror or str(exc))
    if not report.readable:
        last = report.problems[-1].message if report.problems else "unreadable"
        reason = last.removeprefix(DATABASE_ERROR_PREFIX)
        if reason.startswith("no such table"):
            reason = f"not a meshcomm journal ({reason})"
        return Verdict(path, "unreadable", report, key, source, reason)
    if not report.ok or key_problem is not None:
        return Verdict(path, "tampered", report, key, source, key_problem)
    return Verdict(path, "ok", report, key, source)


def _problem_line(problem: Problem) -> str:
    return f"entry {problem.seq}: {problem.kind.value}: {problem.message}"


def _signature_note(verdict: Verdict) -> str:
    if verdict.key is not None:
        return f"signatures verified with node key {fingerprint(verdict.key)}"
    return "signatures not checked: no key for this node (give --key)"


def format_verdict(verdict: Verdict) -> str:
    """The text lines for one file."""
    report = verdict.report
    if report is None:
        return f"{verdict.path}: UNREADABLE: {verdict.reason}"
    counts = f"{report.count} entries, {report.checkpoints} checkpoint(s)"
    if verdict.verdict == "unreadable":
        read = report.count - 1           # the last item stands for the database error
        after = f" after {read} entries" if read > 0 else ""
        return f"{verdict.path}: UNREADABLE{after}: {verdict.reason}"
    if verdict.ok:
        head = report.head[0] if report.head is not None else 0
        tail = (f"; {report.unsigned_tail} entries after the last checkpoint"
                if report.unsigned_tail else "")
        return f"{verdict.path}: ok: {counts} ({_signature_note(verdict)}), head seq {head}{tail}"
    lines = [f"{verdict.path}: TAMPERED: {counts}"]
    if verdict.reason is not None:
        lines[0] += f"; {verdict.reason}"
    if report.problems:
        lines[0] += (f"; first problem at entry {report.problems[0].seq}: "
                     f"{report.problems[0].message} ({len(report.problems)} problem(s))")
        lines += [f"  {_problem_line(p)}"
                  for p in report.problems[1:1 + MAX_LISTED_PROBLEMS]]
        hidden = len(report.problems) - 1 - MAX_LISTED_PROBLEMS
        if hidden > 0:
            lines.append(f"  ... and {hidden} more")
    return "\n".join(lines)


def verdict_json(verdict: Verdict) -> dict[str, object]:
    report = verdict.report
    problems = report.problems if report is not None else ()
    return {
        "file": str(verdict.path),
        "verdict": verdict.verdict,
        "reason": verdict.reason,
        "entries": report.count if report is not None else 0,
        "checkpoints": report.checkpoints if report is not None else 0,
        "signatures_checked": verdict.key is not None,
        "public_key": verdict.key.hex() if verdict.key is not None else None,
        "key_source": verdict.key_source,
        "head_seq": report.head[0] if report is not None and report.head else None,
        "unsigned_tail": report.unsigned_tail if report is not None else 0,
        "first_problem": None if not problems else {
            "seq": problems[0].seq, "kind": problems[0].kind.value,
            "message": problems[0].message},
        "problem_count": len(problems),
        "problems": [{"seq": p.seq, "kind": p.kind.value, "message": p.message}
                     for p in problems[:1 + MAX_LISTED_PROBLEMS]],
    }


def run_verify(args: argparse.Namespace) -> int:
    verdicts = [verify_file(Path(path), args.keys) for path in args.files]
    if args.json:
        print(json.dumps([verdict_json(v) for v in verdicts], indent=2))
    else:
        for verdict in verdicts:
            print(format_verdict(verdict))
    return EXIT_OK if all(v.ok for v in verdicts) else EXIT_BAD


def verify_main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    """``python -m meshcomm.journal.verify FILE...``: the same as ``meshcomm journal
    verify``."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_verify_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_verify(args)
    except BrokenPipeError:
        return EXIT_OK
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
