"""The package boundaries of ../shared/design/ARCHITECTURE.md, checked by parsing imports.

client -> HTTP only; broker -> dledger's public interface; dledger knows
nothing of messages; the consensus core does no I/O and reads no clock;
chaos -> client. Every package is imported by its installed name,
``raftmq.<package>``: a bare ``import dledger`` would load a second copy.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from raftmq import dledger

ROOT = Path(__file__).resolve().parents[2]
STDLIB = set(sys.stdlib_module_names)

ALLOWED = {
    "dledger": {"msgpack", "dledger"},
    "broker": {"msgpack", "aiohttp", "uvloop", "click", "broker", "dledger", "eventloop"},
    "client": {"msgpack", "aiohttp", "uvloop", "click", "tomli_w", "client", "eventloop"},  # tomli_w: node TOML of local groups
    "chaos": {"client", "chaos", "matplotlib", "click", "eventloop"},  # click: its command line
}  # eventloop: raftmq/eventloop.py, the one loop factory, shared by the processes
# The benchmark's baseline node runs the library we compare with.
EXTRA = {"dledger/tools/bench_pysyncobj.py": {"pysyncobj"}}
# dledger's tools are programs: click for their command lines, and the local-group
# supervisor (client.local, a tool too) for the groups they start. Modules, by prefix.
TOOL_EXTRA = {"dledger/tools/": ("click", "client.local")}
CORE_FORBIDDEN = {"asyncio", "time", "os", "socket", "threading", "datetime", "selectors", "subprocess"}


PACKAGES = {"dledger", "broker", "client", "chaos"}


def raw_imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) of every absolute import in ``path``, as written."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module, [a.name for a in node.names], node.lineno))
    return out


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """Like ``raw_imports``, with our packages named without the ``raftmq.``
    prefix (``from raftmq import dledger`` is ``dledger``)."""
    out = []
    for module, names, line in raw_imports(path):
        if module == "raftmq":
            out += [(n, [], line) for n in names]
        else:
            out.append((module.removeprefix("raftmq."), names, line))
    return out


def files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_import_only_what_the_architecture_allows(package: str) -> None:
    bad = []
    for path in files(package):
        rel = str(path.relative_to(ROOT))
        allowed = ALLOWED[package] | EXTRA.get(rel, set())
        for module, _, line in imports(path):
            top = module.split(".")[0]
            tool_ok = any(module == m or module.startswith(m + ".")
                          for prefix, mods in TOOL_EXTRA.items() if rel.startswith(prefix) for m in mods)
            if top not in STDLIB and top not in allowed and not tool_ok:
                bad.append(f"{rel}:{line} imports {module}")
    assert not bad, "imports crossing a boundary:\n" + "\n".join(bad)


def test_broker_uses_only_dledgers_public_interface() -> None:
    bad = []
    for path in files("broker"):
        for module, names, line in imports(path):
            if module == "dledger":
                bad += [f"{path.relative_to(ROOT)}:{line} {n}" for n in names if n not in dledger.__all__]
            elif module.startswith("dledger."):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module} (use `from dledger import ...`)")
    assert not bad, "broker reaches into dledger internals:\n" + "\n".join(bad)


def test_consensus_core_is_pure() -> None:
    bad = []
    for path in files("dledger/core"):
        for module, _, line in imports(path):
            top = module.split(".")[0]
            if top in CORE_FORBIDDEN or top in {"aiohttp", "broker", "client", "chaos"}:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not bad, "the core must stay free of I/O, clocks and threads:\n" + "\n".join(bad)


@pytest.mark.parametrize("folder", ["dledger", "broker", "client", "chaos", "tests"])
def test_our_packages_are_imported_by_their_installed_name(folder: str) -> None:
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for module, _, line in raw_imports(path):
            if module.split(".")[0] in PACKAGES:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module} (write raftmq.{module})")
    assert not bad, "bare package imports load a second copy of the module:\n" + "\n".join(bad)


# Tools (benchmarks, the demo KV node, the local process manager) sit in their
# own subpackages; the library modules never import them. The command line
# (client/cli/) and the chaos suite are tools themselves.
TOOLS = ("dledger.tools", "client.local")
TOOL_USERS = ("dledger/tools/", "client/local/", "client/cli/", "chaos/")


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_library_modules_do_not_import_tools(package: str) -> None:
    bad = []
    for path in files(package):
        rel = str(path.relative_to(ROOT))
        if rel.startswith(TOOL_USERS):
            continue
        for module, names, line in imports(path):
            full = [module] + [f"{module}.{n}" for n in names]
            if any(m == t or m.startswith(t + ".") for m in full for t in TOOLS):
                bad.append(f"{rel}:{line} imports {module}")
    assert not bad, "library modules importing tools:\n" + "\n".join(bad)
