"""Administration of one broker group: topics, offsets and lag, message
lookup, cluster and health. Answers are the broker's JSON objects as plain
dicts (see ``GET /v1/openapi.json``), except messages, which come back as
``ReceivedMessage``. Writes (topic changes) go to the leader; reads to any node.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any, Iterable, cast

from raftmq.client.consumer import ReceivedMessage, committed_offsets, group_path, topic_path
from raftmq.client.errors import RaftMQError
from raftmq.client.http import Transport, TransportConfig
from raftmq.client.sync import SyncClient


class Admin:
    def __init__(self, urls: Iterable[str] | str, *, transport_config: TransportConfig | None = None,
                 transport: Transport | None = None, **options: Any) -> None:
        if transport is None:
            transport = Transport(urls, replace(transport_config or TransportConfig(), **options))
        self.transport = transport

    async def start(self) -> None:
        await self.transport.start()

    async def close(self) -> None:
        await self.transport.close()

    async def __aenter__(self) -> "Admin":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- topics ---------------------------------------------------------------------
    async def create_topic(self, name: str, queues: int = 4) -> dict[str, Any]:
        """Create a topic (the same settings again is fine); raises ``TopicExists``
        if it exists with another queue count. Returns ``describe_topic``'s answer."""
        return cast(dict[str, Any], await self.transport.call("POST", "/v1/topics", {"name": name, "queues": queues}, write=True))

    async def update_topic(self, name: str, queues: int) -> dict[str, Any]:
        """Grow a topic to ``queues`` queues (queues never shrink)."""
        return cast(dict[str, Any], await self.transport.call("PUT", topic_path(name), {"queues": queues}, write=True))

    async def list_topics(self) -> list[dict[str, Any]]:
        """``[{"name", "queues"}]``, sorted by name."""
        return cast(list[dict[str, Any]], (await self.transport.call("GET", "/v1/topics")).get("topics", []))

    async def describe_topic(self, name: str) -> dict[str, Any]:
        """``{"name", "queues", "queue_offsets": [{"queue_id", "min_offset", "max_offset"}]}``."""
        return cast(dict[str, Any], await self.transport.call("GET", topic_path(name)))

    # -- consumer groups -----------------------------------------------------------------
    async def offsets(self, group: str, topic: str) -> dict[int, int | None]:
        """``{queue_id: committed offset or None}``."""
        return await committed_offsets(self.transport, group, topic)

    async def lag(self, group: str, topic: str) -> dict[str, Any]:
        """``{"group", "topic", "lag": total, "queues": [{"queue_id", "committed_offset", "max_offset", "lag"}]}``."""
        return cast(dict[str, Any], await self.transport.call("GET", f"{group_path(group)}/lag", params={"topic": topic}))

    async def members(self, group: str, topic: str) -> list[dict[str, Any]]:
        """Live consumers of the group on the topic: ``[{"client_id", "last_heartbeat_ms"}]`` (asks the leader)."""
        res = await self.transport.call("GET", f"{group_path(group)}/members", params={"topic": topic})
        return cast(list[dict[str, Any]], res.get("members", []))

    # -- messages -------------------------------------------------------------------------
    async def get_message(self, msg_id: str) -> ReceivedMessage:
        """One message by id; raises ``MessageNotFound``."""
        from urllib.parse import quote

        return ReceivedMessage.from_wire(await self.transport.call("GET", f"/v1/messages/{quote(msg_id, safe='')}"))

    async def query(self, key: str, begin_ts: int | None = None, end_ts: int | None = None,
                    max_results: int = 32) -> list[ReceivedMessage]:
        """Messages whose keys include ``key``, stored between ``begin_ts`` and ``end_ts`` (ms)."""
        params = {"key": key, "begin_ts": begin_ts, "end_ts": end_ts, "max": max_results}
        res = await self.transport.call("GET", "/v1/messages", params=params)
        return [ReceivedMessage.from_wire(m) for m in res.get("messages", [])]

    # -- access control (admin users only; the broker keeps secrets, never shows them) ------------
    async def list_users(self) -> dict[str, Any]:
        """``{"enabled": bool, "users": [{"access_key", "admin", "grants": [{"resource", "pattern",
        "actions"}]}]}`` (the bootstrap admin of the nodes' ``[acl]`` settings is marked ``bootstrap``)."""
        return cast(dict[str, Any], await self.transport.call("GET", "/v1/acl/users"))

    async def add_user(self, access_key: str, secret_key: str, admin: bool = False) -> dict[str, Any]:
        """Add a user (replicated through the log); raises ``UserExists``."""
        body = {"access_key": access_key, "secret_key": secret_key, "admin": admin}
        return cast(dict[str, Any], await self.transport.call("POST", "/v1/acl/users", body, write=True))

    async def remove_user(self, access_key: str) -> dict[str, Any]:
        """Remove a user and its grants; its signatures and token stop working. Raises ``UserNotFound``."""
        return cast(dict[str, Any], await self.transport.call("DELETE", _user_path(access_key), write=True))

    async def grant(self, access_key: str, resource: str, pattern: str, actions: Iterable[str]) -> dict[str, Any]:
        """Give ``actions`` (``pub``/``sub`` on a ``topic``, ``sub`` on a ``group``) on the names
        ``pattern`` matches (a name, ``*`` or ``prefix*``). Returns the user's grants."""
        body = {"resource": resource, "pattern": pattern, "actions": list(actions)}
        return cast(dict[str, Any], await self.transport.call("POST", f"{_user_path(access_key)}/grants", body,
                                                              write=True))

    async def revoke(self, access_key: str, resource: str, pattern: str, actions: Iterable[str]) -> dict[str, Any]:
        """Take back ``actions`` of the grant on (``resource``, ``pattern``)."""
        body = {"resource": resource, "pattern": pattern, "actions": list(actions)}
        return cast(dict[str, Any], await self.transport.call("POST", f"{_user_path(access_key)}/revoke", body,
                                                              write=True))

    # -- cluster ------------------------------------------------------------------------------
    async def cluster(self) -> dict[str, Any]:
        """``{"group", "leader_id", "leader_url", "term", "members": [{"id", "http_url", "raft_addr", "role",
        "match_index", "lag"}]}`` as the node asked sees it."""
        return cast(dict[str, Any], await self.transport.call("GET", "/v1/cluster"))

    async def health(self) -> dict[str, dict[str, Any] | None]:
        """``GET /v1/health`` of every known node, by URL (None for a node that did not answer)."""
        await self.transport.discover()

        async def one(url: str) -> dict[str, Any] | None:
            try:
                return cast(dict[str, Any], await self.transport.call("GET", "/v1/health", url=url, deadline_s=2.0))
            except RaftMQError:
                return None

        urls = list(self.transport.urls)
        answers = await asyncio.gather(*(one(u) for u in urls))
        return dict(zip(urls, answers))

    async def leader(self) -> str | None:
        """The leader's URL, as the group's nodes report it (None during an election)."""
        for h in (await self.health()).values():
            if h and h.get("role") == "leader":
                return h.get("leader_url") or None
        return None


def _user_path(access_key: str) -> str:
    from urllib.parse import quote

    return f"/v1/acl/users/{quote(access_key, safe='')}"


class SyncAdmin(SyncClient[Admin]):
    """A blocking ``Admin`` for scripts: every async method of ``Admin`` is
    available here as a plain call (its own event loop in a thread: ``client.sync``)."""

    def __init__(self, urls: Iterable[str] | str, **options: Any) -> None:
        super().__init__("raftmq-admin", lambda: Admin(urls, **options))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not set yet (a failed start): never look it up on the Admin
            raise AttributeError(name)
        attr = getattr(self._client, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr

        def call(*args: Any, **kw: Any) -> Any:
            return self._run(attr(*args, **kw))

        call.__doc__ = attr.__doc__
        return call
