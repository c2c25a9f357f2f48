"""The ACL state every node applies from the log: users and their grants.

A **user** has an access key (its public name), a secret key (shared with
the broker, which needs it to check HMAC signatures; never returned by any
API nor logged), an ``admin`` flag and grants. A **grant** gives actions on
the resources a pattern matches:

| resource | actions | what they allow |
|---|---|---|
| ``topic`` | ``pub`` | produce into the topic; describe it |
| ``topic`` | ``sub`` | read its queues; describe it; consumer-group calls about it |
| ``group`` | ``sub`` | commit, read offsets and lag; heartbeat, members, lock, unlock |

A pattern is a name (``orders``), ``*`` (everything) or a prefix ending in
``*`` (``team-a.*``: every name starting ``team-a.``); no other wildcards.
``admin`` allows everything: create and grow topics, offset resets
(``reset: true``), message lookup by id or key, and ACL changes.

Applying is deterministic (same commands, same state on every replica) and a
command that does not fit (a grant to a user removed meanwhile) changes
nothing and answers why; the leader checks the same before proposing, so
that is only reachable by a race between two admins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from raftmq.broker.commands import AclAddUser, AclCommand, AclGrant, AclRemoveUser, AclRevoke

RESOURCE_ACTIONS: dict[str, frozenset[str]] = {"topic": frozenset({"pub", "sub"}), "group": frozenset({"sub"})}
ACCESS_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
PATTERN_RE = re.compile(r"\*|[A-Za-z0-9_.%-]{1,255}\*?")  # topic/group name characters, optional trailing *
SECRET_RE = re.compile(r"[\x21-\x7e]{16,128}")  # printable ASCII, no spaces


def validate_access_key(key: Any) -> str:
    """``key`` if it is a valid access key; ValueError saying what one looks like."""
    if not isinstance(key, str) or not ACCESS_KEY_RE.fullmatch(key):
        raise ValueError("access_key must be 1 to 64 letters, digits, '-' or '_'")
    return key


def validate_secret(secret: Any) -> str:
    if not isinstance(secret, str) or not SECRET_RE.fullmatch(secret):
        raise ValueError("secret_key must be 16 to 128 printable ASCII characters without spaces")
    return secret


def validate_grant(resource: Any, pattern: Any, actions: Any) -> tuple[str, str, tuple[str, ...]]:
    """(resource, pattern, sorted actions) of a grant or revoke; ValueError otherwise."""
    if resource not in RESOURCE_ACTIONS:
        raise ValueError(f"resource must be one of {', '.join(sorted(RESOURCE_ACTIONS))}")
    if not isinstance(pattern, str) or not PATTERN_RE.fullmatch(pattern):
        raise ValueError("pattern must be a name, '*', or a prefix ending in '*'")
    allowed = RESOURCE_ACTIONS[resource]
    if not isinstance(actions, list) or not actions or not all(isinstance(a, str) and a in allowed for a in actions):
        raise ValueError(f"actions must be a non-empty list of {', '.join(sorted(allowed))} for a {resource}")
    return resource, pattern, tuple(sorted(set(actions)))


def matches(pattern: str, name: str) -> bool:
    """Whether ``pattern`` (a name, ``*`` or ``prefix*``) covers ``name``."""
    if pattern.endswith("*"):
        return name.startswith(pattern[:-1])
    return pattern == name


@dataclass(slots=True)
class User:
    access_key: str
    secret_key: str = field(repr=False)
    admin: bool = False
    grants: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (resource, pattern) -> actions

    def allows(self, resource: str, name: str, action: str) -> bool:
        """Whether this user may do ``action`` on the ``resource`` called ``name``."""
        if self.admin:
            return True
        return any(res == resource and action in acts and matches(pat, name)
                   for (res, pat), acts in self.grants.items())

    def public(self) -> dict[str, Any]:
        """What ``GET /v1/acl/users`` shows: everything but the secret."""
        return {"access_key": self.access_key, "admin": self.admin,
                "grants": [{"resource": r, "pattern": p, "actions": sorted(a)}
                           for (r, p), a in sorted(self.grants.items())]}


class AclError(ValueError):
    """An ACL command that does not fit the state (unknown user, user exists)."""


@dataclass(slots=True)
class AclState:
    users: dict[str, User] = field(default_factory=dict)

    def check(self, cmd: AclCommand) -> None:
        """Raise ``AclError`` if ``cmd`` does not fit the current state."""
        if isinstance(cmd, AclAddUser):
            if cmd.access_key in self.users:
                raise AclError(f"user {cmd.access_key!r} exists; remove it first to change its secret")
        elif cmd.access_key not in self.users:
            raise AclError(f"no user {cmd.access_key!r}")

    def apply(self, cmd: AclCommand) -> dict[str, Any] | str:
        """Apply a committed ACL command: the user's public view, or why nothing changed."""
        try:
            self.check(cmd)
        except AclError as exc:
            return str(exc)
        if isinstance(cmd, AclAddUser):
            self.users[cmd.access_key] = User(cmd.access_key, cmd.secret_key, cmd.admin)
            return self.users[cmd.access_key].public()
        if isinstance(cmd, AclRemoveUser):
            return self.users.pop(cmd.access_key).public()
        user = self.users[cmd.access_key]
        key = (cmd.resource, cmd.pattern)
        if isinstance(cmd, AclGrant):
            user.grants.setdefault(key, set()).update(cmd.actions)
        else:
            assert isinstance(cmd, AclRevoke)
            left = user.grants.get(key, set()) - set(cmd.actions)
            if left:
                user.grants[key] = left
            else:
                user.grants.pop(key, None)
        return user.public()

    def list_users(self) -> list[dict[str, Any]]:
        return [u.public() for _, u in sorted(self.users.items())]

    # -- checkpoint / snapshot ---------------------------------------------------
    def to_doc(self) -> list[Any]:
        """``[[access_key, secret_key, admin, [[resource, pattern, [actions]], ...]], ...]``"""
        return [[u.access_key, u.secret_key, u.admin, [[r, p, sorted(a)] for (r, p), a in sorted(u.grants.items())]]
                for _, u in sorted(self.users.items())]

    @classmethod
    def from_doc(cls, doc: list[Any] | None) -> AclState:
        state = cls()
        for key, secret, admin, grants in doc or []:
            state.users[key] = User(key, secret, bool(admin), {(r, p): set(a) for r, p, a in grants})
        return state
