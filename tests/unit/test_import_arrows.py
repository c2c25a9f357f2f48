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
    "broker": {"msgpack", "aiohttp", "uvloop", "click", "broker", "dledger", "eventloop", "signing"},
    "client": {"msgpack", "aiohttp", "uvloop", "click", "tomli_w", "client", "eventloop", "signing"},  # tomli_w: node TOML of local groups
    "chaos": {"client", "chaos", "matplotlib", "click", "eventloop"},  # click: its command line
}  # eventloop: raftmq/eventloop.py, the one loop factory, shared by the processes
# signing: raftmq/signing.py, the request-signing wire contract (pure), shared by client and broker
# The benchmark's baseline node runs the library we compare with.
EXTRA = {"dledger/tools/bench_pysyncobj.py": {"pysyncobj"},
         # The chaos forge fault speaks the peer protocol as an outsider: through dledger's forger tool.
         "chaos/forge_fault.py": {"dledger"}}
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


# ----------------------------------------------------------------------
# No reaching into another package's private parts. A name starting with
# one underscore belongs to the package that defines it: another package
# neither imports it nor reads it off an object. And the broker holds its
# log (``Broker.log``, a ``DLedger``) by the log's public interface only:
# no attribute chain through it to its store, core or other internals.
# ----------------------------------------------------------------------
def _shown(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_names_defined_in(package: str) -> set[str]:
    """Every ``_name`` a package defines: functions, classes, assigned
    attributes (``self._x = ...``) and assigned names (module or class level)."""
    out: set[str] = set()
    for path in files(package):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = node.name
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                name = node.attr
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                name = node.id
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                name = node.target.id
            else:
                continue
            if _private(name):
                out.add(name)
    return out


def foreign_private_uses(path: Path, package: str, own: set[str]) -> list[str]:
    """``from raftmq.<other> import _x`` and ``obj._x`` where ``_x`` is not
    one of ``package``'s own private names (``self``/``cls`` aside)."""
    rel = _shown(path)
    bad = []
    for module, names, line in imports(path):
        top = module.split(".")[0]
        if top in PACKAGES and top != package.split("/")[0]:
            bad += [f"{rel}:{line} imports {n} from {module}" for n in names if _private(n)]
            bad += [f"{rel}:{line} imports private module {module}" for part in module.split(".") if _private(part)]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own:
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            bad.append(f"{rel}:{node.lineno} reads {ast.unparse(node)}")
    return bad


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_package_reaches_into_another_packages_private_names(package: str) -> None:
    own = private_names_defined_in(package)
    bad = [b for path in files(package) for b in foreign_private_uses(path, package, own)]
    assert not bad, "private names of another package used:\n" + "\n".join(bad)


# What the broker may use of its ``DLedger``: the class's public methods and
# properties, and the ``fatal`` event (set when the node stops on a fatal error).
DLEDGER_HANDLE = "log"  # the broker's name for its DLedger (``self.log``, ``broker.log``)
# ``config.log`` (and ``cfg.log``) is the broker config's log section, a plain
# ``LogSettings`` dataclass: not the DLedger.
CONFIG_NAMES = {"config", "cfg"}


def _base_name(node: ast.expr) -> str | None:
    """The last name of an attribute chain's base: ``config`` for ``self.config``."""
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else None


def dledger_public() -> set[str]:
    from raftmq.dledger import DLedger

    return {n for n in vars(DLedger) if not n.startswith("_")} | {"fatal"}


def log_reach_through(path: Path, public: set[str]) -> list[str]:
    """Uses ``<x>.log.<attr>`` with ``attr`` outside the DLedger's public interface."""
    bad = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and node.value.attr == DLEDGER_HANDLE and node.attr not in public
                and _base_name(node.value.value) not in CONFIG_NAMES):
            bad.append(f"{_shown(path)}:{node.lineno} uses {ast.unparse(node)}")
    return bad


def test_broker_uses_its_log_through_the_public_interface_only() -> None:
    public = dledger_public()
    assert {"propose", "status", "first_index", "read_at"} <= public and "store" not in public
    bad = [b for path in files("broker") for b in log_reach_through(path, public)]
    assert not bad, "the broker reaches through its DLedger:\n" + "\n".join(bad)


def test_the_reach_through_checks_catch_planted_lines(tmp_path: Path) -> None:
    """Each rule above, on a file that breaks it (so none of them passes vacuously)."""
    planted = tmp_path / "planted.py"
    cases = {
        "from raftmq.dledger.runtime import _write_snapshot_file\n": "imports _write_snapshot_file",
        "import raftmq.dledger._hidden\n": "private module",
        "def f(b):\n    return b.log.core._pending\n": "reads b.log.core._pending",
    }
    own = private_names_defined_in("broker")
    for source, expected in cases.items():
        planted.write_text(source)
        found = foreign_private_uses(planted, "broker", own)
        assert any(expected in b for b in found), (source, found)
    for source in ("def f(self):\n    return self.log.store.first_index()\n",
                   "def f(broker):\n    return broker.log.core.term\n"):
        planted.write_text(source)
        assert log_reach_through(planted, dledger_public()), source
    planted.write_text("def f(self):\n    return self.log.first_index(), self._x, self.config.log.flush\n")
    assert not log_reach_through(planted, dledger_public())
    assert not foreign_private_uses(planted, "broker", own)
