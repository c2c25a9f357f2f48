"""``raftmq acl``: users and their permissions, through ``Admin`` (admin users only).

    raftmq acl user add KEY [--admin] [--secret-file FILE]
    raftmq acl user list
    raftmq acl user remove KEY
    raftmq acl grant KEY topic|group PATTERN ACTIONS     # ACTIONS: pub,sub (topic) or sub (group)
    raftmq acl revoke KEY topic|group PATTERN ACTIONS
    raftmq acl token                                     # the bearer token of RAFTMQ_ACCESS_KEY/SECRET_KEY

The command signs with ``RAFTMQ_ACCESS_KEY``/``RAFTMQ_SECRET_KEY``. ``user add``
without ``--secret-file`` makes a random secret and prints it once: the
broker never shows it again.
"""

from __future__ import annotations

import json
import os
import secrets
from typing import Any

import click

from raftmq import signing
from raftmq.client.cli.output import emit, table
from raftmq.client.cli.runner import ask_admin
from raftmq.client.cli.servers import Servers, common_options
from raftmq.client.cli.usage import DataGroup

RESOURCES = ("topic", "group")


@click.group(cls=DataGroup)
def acl() -> None:
    """Users and permissions (with [acl] enabled on the nodes)."""


@acl.group("user", cls=DataGroup)
def user() -> None:
    """Add, list and remove users."""


def _grants(u: dict[str, Any]) -> str:
    return " ".join(f"{g['resource']}:{g['pattern']}:{','.join(g['actions'])}" for g in u.get("grants", [])) or "-"


def _read_secret(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--secret-file") from None


@user.command("add")
@click.argument("access_key")
@click.option("--admin", is_flag=True, help="May do everything: topics, offset resets, ACL changes.")
@click.option("--secret-file", metavar="FILE", help="Read the secret key from FILE (16-128 printable ASCII "
              "characters) instead of making a random one (printed once).")
@common_options
def user_add(access_key: str, admin: bool, secret_file: str | None, servers: Servers, timeout_s: float,
             as_json: bool) -> None:
    """Add user ACCESS_KEY."""
    secret = _read_secret(secret_file) if secret_file else secrets.token_urlsafe(32)
    res = ask_admin(lambda a: a.add_user(access_key, secret, admin), servers, timeout_s)
    shown = {**res, "secret_key": secret} if not secret_file else res
    if as_json:
        emit([json.dumps(shown)])
        return
    lines = [f"user {res['access_key']} added{' (admin)' if res.get('admin') else ''}"]
    if not secret_file:
        lines.append(f"secret key (shown once): {secret}")
    emit(lines)


@user.command("list")
@common_options
def user_list(servers: Servers, timeout_s: float, as_json: bool) -> None:
    """List users and their grants (never their secrets)."""
    res = ask_admin(lambda a: a.list_users(), servers, timeout_s)
    if as_json:
        emit([json.dumps(res)])
        return
    rows = [{"access_key": u["access_key"], "admin": "yes" if u.get("admin") else "no", "grants": _grants(u)}
            for u in res["users"]]
    emit([*([] if res.get("enabled") else ["access control is off on this group ([acl] enabled = false)"]),
          *table(["access_key", "admin", "grants"], rows)])


@user.command("remove")
@click.argument("access_key")
@common_options
def user_remove(access_key: str, servers: Servers, timeout_s: float, as_json: bool) -> None:
    """Remove user ACCESS_KEY: its signatures and token stop working at once."""
    res = ask_admin(lambda a: a.remove_user(access_key), servers, timeout_s)
    emit([json.dumps(res) if as_json else f"user {res['access_key']} removed"])


def _grant_command(name: str, verb: str) -> click.Command:
    @click.argument("access_key")
    @click.argument("resource", type=click.Choice(RESOURCES))
    @click.argument("pattern")
    @click.argument("actions")
    @common_options
    def run(access_key: str, resource: str, pattern: str, actions: str, servers: Servers, timeout_s: float,
            as_json: bool) -> None:
        acts = [a for a in actions.replace(",", " ").split() if a]
        res = ask_admin(lambda a: getattr(a, name)(access_key, resource, pattern, acts), servers, timeout_s)
        emit([json.dumps(res) if as_json else f"user {res['access_key']}: {_grants(res)}"])

    run.__doc__ = (f"{verb} ACTIONS (pub,sub on a topic; sub on a group) on the topics or groups PATTERN "
                   f"matches (a name, '*' or a prefix ending in '*').")
    return click.command(name)(run)


acl.add_command(_grant_command("grant", "Give ACCESS_KEY"))
acl.add_command(_grant_command("revoke", "Take back from ACCESS_KEY"))


@acl.command("token")
def token() -> None:
    """Print the bearer token of RAFTMQ_ACCESS_KEY/RAFTMQ_SECRET_KEY, for tools that
    cannot sign (curl -H "Authorization: Bearer $TOKEN"). Computed here; send it over TLS only."""
    key, secret = os.environ.get("RAFTMQ_ACCESS_KEY"), os.environ.get("RAFTMQ_SECRET_KEY")
    if not key or not secret:
        raise click.UsageError("set RAFTMQ_ACCESS_KEY and RAFTMQ_SECRET_KEY")
    emit([signing.bearer_token(key, secret)])
