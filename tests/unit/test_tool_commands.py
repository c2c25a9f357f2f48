"""The command lines of the tool programs under dledger/tools/ (click): every
option has help text, the option names and defaults are those the tools had,
and a bad value is one line on stderr with exit code 2, before anything starts."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from raftmq.dledger.tools import bench, bench_pysyncobj, bench_store, kvnode

TOOLS = {"bench": bench.main, "kvnode": kvnode.main, "bench_pysyncobj": bench_pysyncobj.main,
         "bench_store": bench_store.main}


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_every_option_has_help_text(name: str) -> None:
    command = TOOLS[name]
    missing = [p.opts[0] for p in command.params if isinstance(p, click.Option) and not p.help]
    assert not missing, f"{name}: options without help: {missing}"
    assert command.help


def defaults(command: click.Command) -> dict[str, object]:
    ctx = click.Context(command)
    return {p.opts[0]: p.get_default(ctx) for p in command.params if isinstance(p, click.Option) and not p.required}


def test_option_names_and_defaults_are_kept() -> None:
    assert defaults(bench.main) == {
        "--flush": "async,sync", "--duration": 5.0, "--warmup": 1.0, "--outstanding": 1000, "--connections": 4,
        "--samples": 2000, "--payload-bytes": 1024, "--baseline": None, "--json": False, "--profile": False,
        "--base-dir": None}
    assert defaults(kvnode.main) == {"--flush": "async", "--segment-bytes": 1 << 30, "--bootstrap": False,
                                     "--log-level": "INFO", "--profile": None}
    assert {p.opts[0] for p in kvnode.main.params if getattr(p, "required", False)} == {
        "--id", "--group", "--peers", "--client-addr", "--data-dir"}
    assert defaults(bench_store.main) == {"--entries": 200_000, "--sync-entries": 20_000, "--batch": 100,
                                          "--size": 1024, "--segment-bytes": 64 << 20, "--dir": None}
    assert defaults(bench_pysyncobj.main) == {"--no-batch": False, "--log-level": "WARNING"}


KV = ["--id", "n1", "--group", "g", "--peers", "n1=127.0.0.1:7001", "--client-addr", "127.0.0.1:8001"]


@pytest.mark.parametrize("name, args, says", [
    ("bench", ["--duration", "x"], "'--duration'"),
    ("bench", ["--duration", "0"], "'--duration'"),
    ("bench", ["--flush", "fast"], "'--flush': 'fast'"),
    ("bench", ["--flush", ","], "'--flush'"),
    ("bench", ["--outstanding", "0"], "'--outstanding'"),
    ("bench", ["--baseline", "etcd"], "'--baseline'"),
    ("bench", ["--nope"], "No such option '--nope'"),
    ("kvnode", [*KV[:4], "--peers", "n1", "--client-addr", "127.0.0.1:8001"], "'--peers': bad item 'n1'"),
    ("kvnode", [*KV[:6], "--client-addr", "nowhere"], "'--client-addr': bad address 'nowhere'"),
    ("kvnode", ["--id", "n9", *KV[2:]], "'n9' is not in peers"),
    ("kvnode", [*KV, "--flush", "never"], "'--flush'"),
    ("kvnode", [*KV, "--log-level", "loud"], "'--log-level'"),
    ("kvnode", KV[:-2], "Missing option '--client-addr'"),
    ("bench_pysyncobj", ["--self", "x", "--partners", "127.0.0.1:2", "--client-addr", "127.0.0.1:3"], "'--self'"),
    ("bench_pysyncobj", ["--self", "127.0.0.1:1", "--partners", "127.0.0.1:2,y", "--client-addr", "127.0.0.1:3"],
     "'--partners'"),
    ("bench_store", ["--batch", "0"], "'--batch'"),
    ("bench_store", ["--dir", "/no/such/dir/anywhere"], "'--dir'"),
])
def test_a_bad_value_is_one_line_and_exit_code_2(name: str, args: list[str], says: str, tmp_path: object) -> None:
    if name == "kvnode":
        args = [*args, "--data-dir", str(tmp_path)]
    result = CliRunner().invoke(TOOLS[name], args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "--help" in lines[0], result.output
