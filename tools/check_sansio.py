"""Check that protocol cores stay sans-IO (ARCHITECTURE.md rule 1).

A core package must not import asyncio, socket, threading, time, select, selectors,
subprocess or sqlite3, and must not call module-level ``random`` functions
(``random.random()``, ``random.choice()``...); it may use ``random.Random`` instances handed
to it. The persistence adapters named in :data:`IO_ADAPTERS` are exempt: they are the
places where a core package meets the disk (not even an exception type of sqlite3 is
imported anywhere else).

Run: ``python -m tools.check_sansio`` (exit 1 and one line per violation).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

CORE_PACKAGES = ("overlay", "dht", "location", "sip", "media", "journal", "node", "wire", "export",
                 "security")
FORBIDDEN_MODULES = frozenset(
    {"asyncio", "socket", "threading", "time", "select", "selectors", "subprocess", "sqlite3"}
)
#: Files inside core packages allowed to do IO, relative to meshcomm/: each one is an
#: adapter between a sans-IO part and the disk.
IO_ADAPTERS = frozenset({
    "journal/store.py",          # the journal's SQLite file (JournalStore)
    "journal/verify.py",         # reads a journal file read-only for `meshcomm journal
                                 # verify`; the verifier itself is journal/audit.py (core)
    "security/keystore.py",      # the node's key file
    "node/storage.py",           # store-and-forward's SQLite file
    "node/freshness_store.py",   # the freshness memory's SQLite file
    "node/revocation_store.py",  # the trust records' SQLite file
    "export/reader.py",          # reads journal files for `meshcomm export`
    "export/outputs.py",         # writes the export's timeline files
    "export/pipeline.py",        # `meshcomm export`: reader, core parts, outputs
})
ALLOWED_RANDOM_ATTRS = frozenset({"Random", "SystemRandom"})


def _violations_in(path: Path, rel: str) -> Iterator[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    random_aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in FORBIDDEN_MODULES:
                    yield f"{rel}:{node.lineno}: imports {alias.name}"
                if top == "random":
                    random_aliases.add(alias.asname or "random")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            top = node.module.split(".")[0]
            if top in FORBIDDEN_MODULES:
                yield f"{rel}:{node.lineno}: imports from {node.module}"
            if top == "random":
                for alias in node.names:
                    if alias.name not in ALLOWED_RANDOM_ATTRS:
                        yield f"{rel}:{node.lineno}: imports random.{alias.name}"
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in random_aliases and node.attr not in ALLOWED_RANDOM_ATTRS):
            yield f"{rel}:{node.lineno}: uses module-level random.{node.attr}"


def find_violations(package_root: Path) -> list[str]:
    found: list[str] = []
    for pkg in CORE_PACKAGES:
        for path in sorted((package_root / pkg).rglob("*.py")):
            rel = path.relative_to(package_root).as_posix()
            if rel in IO_ADAPTERS:
                continue
            found.extend(_violations_in(path, rel))
    return found


def main() -> int:
    root = Path(__file__).resolve().parent.parent / "meshcomm"
    problems = find_violations(root)
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
