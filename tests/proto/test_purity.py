"""The core performs no I/O, reads no clock and draws no randomness: it cannot even import them."""

from __future__ import annotations

import ast
from pathlib import Path

import zeropay_proto

FORBIDDEN = {
    "trio", "asyncio", "socket", "time", "random", "secrets", "os", "redis", "asyncpg",
    "quart", "quart_trio", "hypercorn", "trio_asyncio", "trio_parallel", "subprocess",
    "threading", "multiprocessing", "datetime", "uuid_utils", "io", "pathlib", "logging",
}  # fmt: skip


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_imports_no_io_clock_or_randomness() -> None:
    package = Path(zeropay_proto.__file__).parent
    files = sorted(package.rglob("*.py"))
    assert len(files) >= 10
    offenders = {str(f.relative_to(package)): imported_roots(f) & FORBIDDEN for f in files}
    assert {name: bad for name, bad in offenders.items() if bad} == {}


def test_purity_check_catches_a_forbidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import os.path\nfrom time import time\nfrom . import sibling\n")
    assert imported_roots(sample) & FORBIDDEN == {"os", "time"}
