"""Which broker group a data command talks to, and the options every data
command shares (``--server``, ``--timeout``, ``--json``).

``--server URL`` (repeatable or comma-separated; or the ``RAFTMQ_SERVER``
environment variable, URLs separated by spaces or commas) names any node(s)
of the group; the client learns the others and follows the leader. Without
it, the nodes of the local group that ``raftmq cluster up`` wrote to
./raftmq-data/cluster.json, else http://127.0.0.1:8081.

Requests give up after ``--timeout`` seconds (default 5: long enough to ride
out an election, short enough that a wrong server fails fast).

Credentials and TLS come from the environment, read here at the edge:
``RAFTMQ_ACCESS_KEY`` and ``RAFTMQ_SECRET_KEY`` (both, to sign every request)
and ``RAFTMQ_CA_FILE`` (the CA bundle https:// nodes are verified against;
``--ca-file`` sets it for one command).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import click

from raftmq.client.http import normalize_url
from raftmq.client.local.cluster import DEFAULT_BASE_DIR, STATE_FILE

DEFAULT_URL = "http://127.0.0.1:8081"
LOCAL_BASE_DIR = Path(DEFAULT_BASE_DIR)
DEFAULT_TIMEOUT_S = 5.0


@dataclass(slots=True, frozen=True)
class Servers:
    """The node URLs a command talks to, and where they came from (for error hints)."""

    urls: tuple[str, ...]
    origin: str  # "option", "env", "local" (./raftmq-data/cluster.json) or "default"

    def hint(self) -> str:
        """What to add to "cannot connect to ...": where these URLs came from and what to check."""
        if self.origin == "local":
            return f" (the local group of ./{LOCAL_BASE_DIR / STATE_FILE}: is it running? see 'raftmq cluster status')"
        if self.origin == "default":
            return (f" (the default: no ./{LOCAL_BASE_DIR / STATE_FILE} here; start a group with "
                    "'raftmq cluster up' or pass --server)")
        if self.origin == "env":
            return " (from RAFTMQ_SERVER)"
        return ""


def local_group_urls(base_dir: Path = LOCAL_BASE_DIR) -> list[str]:
    """The HTTP URLs of the nodes in ``<base_dir>/cluster.json`` ([] if there is no usable file)."""
    try:
        nodes = json.loads((base_dir / STATE_FILE).read_text())["nodes"]
        return [normalize_url(n["http_url"]) for n in nodes]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def parse_servers(values: Iterable[str], origin: str, base_dir: Path = LOCAL_BASE_DIR) -> Servers:
    """``--server`` values (each may hold several URLs separated by commas or
    spaces; ``host:port`` means ``http://host:port``) or the default group."""
    urls: list[str] = []
    for value in values:
        for item in value.replace(",", " ").split():
            try:
                url = normalize_url(item)
            except ValueError:
                raise click.BadParameter(f"{item!r} is not a broker URL (expected http://HOST:PORT)",
                                         param_hint="--server")
            if url not in urls:
                urls.append(url)
    if urls:
        return Servers(tuple(urls), origin)
    local = local_group_urls(base_dir)
    if local:
        return Servers(tuple(local), "local")
    return Servers((DEFAULT_URL,), "default")


def _servers_callback(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> Servers:
    source = ctx.get_parameter_source(param.name or "servers")
    return parse_servers(value, "env" if source == click.core.ParameterSource.ENVIRONMENT else "option")


def transport_options(timeout_s: float) -> dict[str, Any]:
    """Client options for a command that gives up after ``timeout_s`` seconds,
    with the credentials and CA file of the environment (module docstring)."""
    ms = max(1, int(timeout_s * 1000))
    return {"deadline_ms": ms, "request_timeout_ms": min(ms, 4000), "connect_timeout_ms": min(ms, 1000),
            **credential_options(os.environ)}


def credential_options(env: Any) -> dict[str, Any]:
    """``access_key``/``secret_key``/``ca_file`` from ``RAFTMQ_*`` variables;
    ``click.UsageError`` when only one of the keys is set."""
    key, secret = env.get("RAFTMQ_ACCESS_KEY") or None, env.get("RAFTMQ_SECRET_KEY") or None
    if (key is None) != (secret is None):
        raise click.UsageError("set both RAFTMQ_ACCESS_KEY and RAFTMQ_SECRET_KEY, or neither")
    out: dict[str, Any] = {"access_key": key, "secret_key": secret} if key else {}
    if env.get("RAFTMQ_CA_FILE"):
        out["ca_file"] = env["RAFTMQ_CA_FILE"]
    return out


def _ca_file_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    # The command's client options are read from the environment (transport_options),
    # possibly on the client's loop thread: the flag is one more way to set it.
    if value:
        os.environ["RAFTMQ_CA_FILE"] = value


def common_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--server, --timeout and --json, on every data command."""
    f = click.option("--json", "as_json", is_flag=True, help="JSON output for scripts (one object per line "
                     "for messages and send results).")(f)
    f = click.option("--timeout", "timeout_s", type=click.FloatRange(0.1, 3600), default=DEFAULT_TIMEOUT_S,
                     show_default=True, metavar="SECONDS",
                     help="Give up on a request (after retrying through elections) after this long.")(f)
    f = click.option("--ca-file", type=click.Path(exists=True, dir_okay=False), expose_value=False,
                     callback=_ca_file_callback, metavar="FILE",
                     help="Verify https:// nodes against this CA bundle (PEM) [env: RAFTMQ_CA_FILE]. "
                          "Credentials: RAFTMQ_ACCESS_KEY and RAFTMQ_SECRET_KEY sign every request.")(f)
    f = click.option("--server", "servers", multiple=True, envvar="RAFTMQ_SERVER", show_envvar=True,
                     callback=_servers_callback, metavar="URL",
                     help=f"A node of the group, like http://127.0.0.1:8081 (repeatable or comma-separated; "
                          f"the other nodes are found from it). Default: the local group in "
                          f"./{LOCAL_BASE_DIR / STATE_FILE} (written by 'raftmq cluster up') if it exists, "
                          f"else {DEFAULT_URL}.")(f)
    return f
