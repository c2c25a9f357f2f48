"""The client speaks HTTP only: it may import aiohttp, msgpack, click, uvloop
(its event loop, where installed), raftmq.signing (the request-signing contract
it shares with the broker), the standard library and itself, never ``broker`` or ``dledger`` (../shared/design/ARCHITECTURE.md)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

CLIENT = Path(__file__).resolve().parents[2] / "client"
ALLOWED = {"aiohttp", "msgpack", "click", "yarl", "multidict", "uvloop", "eventloop", "signing", "client"} | set(sys.stdlib_module_names) | {"__future__"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {_root(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots |= {_root(f"{node.module}.{a.name}") if node.module == "raftmq" else _root(node.module)
                      for a in node.names}
    return roots


def _root(module: str) -> str:
    """The top-level name, our packages without their ``raftmq.`` prefix."""
    parts = module.split(".")
    return parts[1] if parts[0] == "raftmq" and len(parts) > 1 else parts[0]


# The library modules; the command line (cli/) starts other programs and is checked on its own.
LIBRARY = ("__init__.py", "errors.py", "http.py", "loop.py", "sync.py", "producer.py", "consumer.py", "admin.py")


def test_client_library_imports_only_http_libraries_and_the_stdlib() -> None:
    files = [CLIENT / name for name in LIBRARY]
    assert files
    bad = {f.name: sorted(imported_roots(f) - ALLOWED) for f in files if imported_roots(f) - ALLOWED}
    assert not bad, f"client modules import what they must not: {bad}"


def test_command_line_modules_import_only_http_libraries_click_and_the_stdlib() -> None:
    """The command line (the cli/ package: data commands, cluster, bench) starts
    broker programs and speaks HTTP; it never imports ``broker`` or ``dledger``."""
    files = sorted(set(CLIENT.glob("*.py")) - {CLIENT / name for name in LIBRARY} | set((CLIENT / "cli").glob("*.py")))
    assert {CLIENT / "cli" / "__init__.py", CLIENT / "cli" / "produce.py"} <= set(files)
    bad = {f.name: sorted(imported_roots(f) - ALLOWED) for f in files if imported_roots(f) - ALLOWED}
    assert not bad, f"client modules import what they must not: {bad}"
