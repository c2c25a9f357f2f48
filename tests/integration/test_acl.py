"""Access control against a real 3-node group with ``[acl] enabled``: each
attack of issue 11 is refused (403), unsigned or badly signed requests are
401, ACL changes apply on every node and survive a restart, and the
``raftmq acl`` commands work end to end."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from raftmq import signing
from raftmq.client import Producer
from raftmq.client.admin import SyncAdmin
from tests.integration.broker_group import BrokerGroup, running_group

ROOT_SECRET = "root-secret-0123456789"
A_SECRET = "team-a-secret-0123456789"
B_SECRET = "team-b-secret-0123456789"


def call(method: str, url: str, body: Any = None, *, key: str | None = None, secret: str | None = None,
         date_ms: int | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One JSON request, signed with ``key``/``secret`` when given; (status, decoded body). No redirects followed."""
    raw = json.dumps(body).encode() if body is not None else b""
    req = urllib.request.Request(url, data=raw if body is not None else None, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if key is not None and secret is not None:
        u = urllib.parse.urlsplit(url)
        target = signing.canonical_target(u.path, urllib.parse.parse_qsl(u.query, keep_blank_values=True))
        stamp = date_ms if date_ms is not None else int(time.time() * 1000)
        for k, v in signing.sign_headers(key, secret, method, target, raw, stamp).items():
            req.add_header(k, v)
    for k, v in (headers or {}).items():
        req.add_header(k, v)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a: Any, **k: Any) -> None:
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def as_root(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    return call(method, url, body, key="root", secret=ROOT_SECRET)


def as_a(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    return call(method, url, body, key="team_a", secret=A_SECRET)


def as_b(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    return call(method, url, body, key="team_b", secret=B_SECRET)


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerGroup]:
    base = tmp_path_factory.mktemp("acl")
    (base / "admin.secret").write_text(ROOT_SECRET + "\n")
    acl = {"enabled": True, "admin_access_key": "root", "admin_secret_file": str(base / "admin.secret")}
    with running_group(base, extra={"acl": acl, "checkpoint_interval_ms": 200}) as g:
        url = g.leader().http_url
        for body in ({"access_key": "team_a", "secret_key": A_SECRET},
                     {"access_key": "team_b", "secret_key": B_SECRET},
                     {"access_key": "b_in_a", "secret_key": B_SECRET}):  # team B's member of A's group
            assert as_root("POST", url + "/v1/acl/users", body)[0] == 200
        grants = [("team_a", "topic", "a-*", ["pub", "sub"]), ("team_a", "group", "a-group", ["sub"]),
                  ("team_b", "topic", "b-*", ["pub", "sub"]), ("team_b", "group", "b-*", ["sub"]),
                  ("b_in_a", "topic", "a-orders", ["sub"]), ("b_in_a", "group", "a-group", ["sub"])]
        for key, resource, pattern, actions in grants:
            status, _ = as_root("POST", f"{url}/v1/acl/users/{key}/grants",
                                {"resource": resource, "pattern": pattern, "actions": actions})
            assert status == 200
        for name in ("a-orders", "b-events"):
            assert as_root("POST", url + "/v1/topics", {"name": name, "queues": 2})[0] == 200
        assert as_a("POST", url + "/v1/topics/a-orders/messages", {"messages": [{"body": "pay 10"}] * 3})[0] == 200
        assert as_a("POST", url + "/v1/groups/a-group/offsets", {"topic": "a-orders", "queue_id": 0, "offset": 2})[0] == 200
        yield g


# ----------------------------------------------------------------------
# the attacks of issue 11
# ----------------------------------------------------------------------
def test_another_team_cannot_rewind_a_consumer_group(group: BrokerGroup) -> None:
    url = group.leader().http_url
    status, body = as_b("POST", url + "/v1/groups/a-group/offsets",
                        {"topic": "a-orders", "queue_id": 0, "offset": 0, "reset": True})
    assert status == 403 and body["error"] == "forbidden", (status, body)
    # even the owning team needs admin to move its offsets back
    status, body = as_a("POST", url + "/v1/groups/a-group/offsets",
                        {"topic": "a-orders", "queue_id": 0, "offset": 0, "reset": True})
    assert status == 403 and body["error"] == "forbidden", (status, body)
    status, body = as_a("GET", url + "/v1/groups/a-group/offsets?topic=a-orders")
    assert status == 200 and body["offsets"][0]["offset"] == 2


def test_producing_into_a_topic_without_pub_is_forbidden(group: BrokerGroup) -> None:
    url = group.leader().http_url
    before = as_root("GET", url + "/v1/topics/a-orders")[1]
    status, body = as_b("POST", url + "/v1/topics/a-orders/messages", {"messages": [{"body": "fake payment"}]})
    assert status == 403 and body["error"] == "forbidden", (status, body)
    assert "team_b" in body["message"] and B_SECRET not in json.dumps(body)
    assert as_root("GET", url + "/v1/topics/a-orders")[1] == before  # nothing stored
    assert as_b("POST", url + "/v1/topics/b-events/messages", {"messages": [{"body": "ok"}]})[0] == 200


def test_growing_a_topic_needs_admin(group: BrokerGroup) -> None:
    url = group.leader().http_url
    for who in (as_a, as_b):
        status, body = who("PUT", url + "/v1/topics/b-events", {"queues": 1024})
        assert status == 403 and body["error"] == "forbidden", (status, body)
    assert as_b("POST", url + "/v1/topics", {"name": "b-new", "queues": 4})[0] == 403
    assert as_root("GET", url + "/v1/topics/b-events")[1]["queues"] == 2


def test_another_client_cannot_release_or_take_a_queue_lock(group: BrokerGroup) -> None:
    url = group.leader().http_url
    lock = {"topic": "a-orders", "client_id": "a-consumer-1", "queue_ids": [0, 1]}
    hb = {"topic": "a-orders", "client_id": "a-consumer-1"}
    assert as_a("POST", url + "/v1/groups/a-group/heartbeat", hb)[0] == 200
    # team B without sub on the group: cannot even see the members
    status, body = as_b("GET", url + "/v1/groups/a-group/members?topic=a-orders")
    assert status == 403 and body["error"] == "forbidden", (status, body)
    assert as_b("POST", url + "/v1/groups/a-group/unlock", lock)[0] == 403
    # a user with sub on the group reads the members but cannot act under A's client id
    status, body = call("GET", url + "/v1/groups/a-group/members?topic=a-orders", key="b_in_a", secret=B_SECRET)
    assert status == 200 and [m["client_id"] for m in body["members"]] == ["a-consumer-1"]
    for path in ("unlock", "locks", "heartbeat"):
        status, body = call("POST", f"{url}/v1/groups/a-group/{path}", lock if path != "heartbeat" else hb,
                            key="b_in_a", secret=B_SECRET)
        assert status == 403 and body["error"] == "client_id_taken", (path, status, body)
    # its own client id is fine (and gets no lock A holds, once A has them)
    status, _ = call("POST", url + "/v1/groups/a-group/heartbeat", {"topic": "a-orders", "client_id": "b-1"},
                     key="b_in_a", secret=B_SECRET)
    assert status == 200


# ----------------------------------------------------------------------
# authentication
# ----------------------------------------------------------------------
def test_unsigned_and_badly_signed_requests_are_401(group: BrokerGroup) -> None:
    url = group.leader().http_url + "/v1/topics/a-orders"
    now = int(time.time() * 1000)
    cases = {
        "unsigned": call("GET", url),
        "wrong secret": call("GET", url, key="team_a", secret=B_SECRET),
        "unknown key": call("GET", url, key="nobody", secret=A_SECRET),
        "date too old": call("GET", url, key="team_a", secret=A_SECRET, date_ms=now - 301_000),
        "date ahead": call("GET", url, key="team_a", secret=A_SECRET, date_ms=now + 301_000),
        "bad token": call("GET", url, headers={"Authorization": "Bearer rmq1.team_a.00ff"}),
        "basic auth": call("GET", url, headers={"Authorization": "Basic dGVhbV9hOng="}),
    }
    for what, (status, body) in cases.items():
        assert status == 401 and body["error"] == "unauthenticated", (what, status, body)
        for secret in (A_SECRET, B_SECRET, ROOT_SECRET):
            assert secret not in json.dumps(body), what
    # a signed body that was changed on the way
    raw_ok = call("GET", url, key="team_a", secret=A_SECRET)
    assert raw_ok[0] == 200
    token = signing.bearer_token("team_a", A_SECRET)
    assert call("GET", url, headers={"Authorization": f"Bearer {token}"})[0] == 200
    assert call("GET", group.leader().http_url + "/v1/health")[0] == 200  # open
    assert call("GET", group.leader().http_url + "/v1/cluster")[0] == 401
    logs = group.logs()
    assert "event=auth_refused" in logs and A_SECRET not in logs and B_SECRET not in logs


def test_a_tampered_body_is_401(group: BrokerGroup) -> None:
    url = group.leader().http_url + "/v1/topics/a-orders/messages"
    signed_for = json.dumps({"messages": [{"body": "pay 10"}]}).encode()
    target = signing.canonical_target("/v1/topics/a-orders/messages", [])
    headers = signing.sign_headers("team_a", A_SECRET, "POST", target, signed_for, int(time.time() * 1000))
    req = urllib.request.Request(url, data=json.dumps({"messages": [{"body": "pay 10000"}]}).encode(),
                                 method="POST", headers={**headers, "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 401


# ----------------------------------------------------------------------
# replication and restart
# ----------------------------------------------------------------------
def test_acl_changes_apply_on_every_node(group: BrokerGroup) -> None:
    leader = group.leader().http_url
    follower = group.followers()[0].http_url
    read = "/v1/topics/b-events/queues/0/messages?max=1&consistency=local"
    assert as_a("GET", follower + read)[0] == 403
    assert as_root("POST", leader + "/v1/acl/users/team_a/grants",
                   {"resource": "topic", "pattern": "b-events", "actions": ["sub"]})[0] == 200
    group.wait_for(lambda: as_a("GET", follower + read)[0] == 200, 10, "the grant on the follower")
    assert as_root("POST", leader + "/v1/acl/users/team_a/revoke",
                   {"resource": "topic", "pattern": "b-events", "actions": ["sub"]})[0] == 200
    group.wait_for(lambda: as_a("GET", follower + read)[0] == 403, 10, "the revoke on the follower")
    # a follower redirects ACL changes to the leader, after checking who asks
    assert as_b("POST", follower + "/v1/acl/users", {"access_key": "x", "secret_key": B_SECRET})[0] == 403
    assert as_root("POST", follower + "/v1/acl/users", {"access_key": "x", "secret_key": B_SECRET})[0] == 307


def test_a_restarted_node_still_enforces(group: BrokerGroup) -> None:
    node = group.followers()[0]
    as_root("POST", group.leader().http_url + "/v1/acl/users/team_b/grants",
            {"resource": "topic", "pattern": "a-orders", "actions": ["sub"]})
    read = node.http_url + "/v1/topics/a-orders/queues/0/messages?max=1&consistency=local"
    group.wait_for(lambda: as_b("GET", read)[0] == 200, 10, "the grant on the follower")
    time.sleep(0.5)  # let a checkpoint hold it, then kill: the restart loads it (and replays the rest)
    group.kill(node.id, signal.SIGKILL)
    group.start(node.id)
    group.wait_for(lambda: group.health(node.id), 20, "the node back")
    assert as_b("GET", read)[0] == 200
    assert as_b("POST", node.http_url + "/v1/groups/a-group/offsets",
                {"topic": "a-orders", "queue_id": 0, "offset": 0, "reset": True})[0] == 403
    assert call("GET", read)[0] == 401
    assert as_root("POST", group.leader().http_url + "/v1/acl/users/team_b/revoke",
                   {"resource": "topic", "pattern": "a-orders", "actions": ["sub"]})[0] == 200


# ----------------------------------------------------------------------
# the Python client and the CLI
# ----------------------------------------------------------------------
async def test_the_client_signs_when_given_keys(group: BrokerGroup) -> None:
    urls = [n.http_url for n in group.nodes]
    async with Producer(urls, access_key="team_a", secret_key=A_SECRET, deadline_ms=5000) as p:
        res = await p.send("a-orders", b"signed")
        assert res.queue_offset >= 0
    from raftmq.client.errors import Forbidden, Unauthenticated
    async with Producer(urls, access_key="team_b", secret_key=B_SECRET, deadline_ms=5000) as p:
        with pytest.raises(Forbidden):
            await p.send("a-orders", b"fake")
    async with Producer(urls, deadline_ms=5000) as p:
        with pytest.raises(Unauthenticated):
            await p.send("a-orders", b"unsigned")
    with SyncAdmin(urls, access_key="root", secret_key=ROOT_SECRET, deadline_ms=5000) as admin:
        users = admin.list_users()["users"]
        assert {u["access_key"] for u in users} >= {"root", "team_a", "team_b"}
        assert all("secret_key" not in u for u in users)


def cli(*args: str, key: str = "root", secret: str = ROOT_SECRET) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RAFTMQ_ACCESS_KEY=key, RAFTMQ_SECRET_KEY=secret)
    return subprocess.run([sys.executable, "-m", "raftmq.client.cli", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def test_acl_cli_end_to_end(group: BrokerGroup, tmp_path: Path) -> None:
    server = ("--server", group.nodes[0].http_url)
    secret_file = tmp_path / "carol.secret"
    secret_file.write_text("carol-secret-0123456789\n")
    r = cli("acl", "user", "add", "carol", "--secret-file", str(secret_file), *server, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["access_key"] == "carol"
    r = cli("acl", "grant", "carol", "topic", "a-*", "sub", *server)
    assert r.returncode == 0 and "topic:a-*:sub" in r.stdout, r.stderr
    r = cli("acl", "user", "list", *server, "--json")
    assert r.returncode == 0 and "carol-secret" not in r.stdout
    carol = next(u for u in json.loads(r.stdout)["users"] if u["access_key"] == "carol")
    assert carol["grants"] == [{"resource": "topic", "pattern": "a-*", "actions": ["sub"]}]
    r = cli("consume", "--topic", "a-orders", "--from-beginning", "--max", "1", *server, key="carol",
            secret="carol-secret-0123456789")
    assert r.returncode == 0 and "pay 10" in r.stdout, r.stderr
    r = cli("produce", "--topic", "a-orders", "nope", *server, key="carol", secret="carol-secret-0123456789")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "lacks pub" in r.stderr
    r = cli("acl", "revoke", "carol", "topic", "a-*", "sub", *server)
    assert r.returncode == 0 and "carol: -" in r.stdout
    r = cli("acl", "user", "remove", "carol", *server)
    assert r.returncode == 0
    r = cli("topic", "list", *server, key="carol", secret="carol-secret-0123456789")
    assert r.returncode == 1 and r.stderr.startswith("raftmq: unknown access key") and r.stderr.count("\n") == 1
    # errors: one line, non-zero
    for args, words in ((("acl", "user", "remove", "carol"), "no user 'carol'"),
                        (("acl", "grant", "team_a", "group", "g", "pub"), "actions must be"),
                        (("acl", "user", "add", "bad key!"), "access_key must be")):
        r = cli(*args, *server)
        assert r.returncode == 1 and words in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)
    r = cli("acl", "user", "list", *server, key="team_a", secret=A_SECRET)
    assert r.returncode == 1 and "not an admin" in r.stderr and r.stderr.count("\n") == 1


async def test_a_consumer_with_sub_on_its_group_consumes_and_commits(group: BrokerGroup) -> None:
    from raftmq.client.consumer import PushConsumer, ReceivedMessage

    urls = [n.http_url for n in group.nodes]
    got: list[bytes] = []

    def handle(m: ReceivedMessage) -> None:
        got.append(m.body)

    consumer = PushConsumer(urls, "a-group", "a-orders", handle, client_id="a-push", access_key="team_a",
                            secret_key=A_SECRET, heartbeat_interval_ms=200, commit_interval_ms=100,
                            long_poll_ms=100, deadline_ms=5000)
    offsets = as_a("GET", group.leader().http_url + "/v1/groups/a-group/offsets?topic=a-orders")[1]["offsets"]
    before = sum(o["offset"] or 0 for o in offsets)
    await consumer.start()
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(b == b"pay 10" for b in got):
            await asyncio.sleep(0.05)
        assert b"pay 10" in got
    finally:
        await consumer.stop()
    def committed() -> int:
        status, body = as_a("GET", group.leader().http_url + "/v1/groups/a-group/offsets?topic=a-orders")
        assert status == 200
        return sum(o["offset"] or 0 for o in body["offsets"])

    assert committed() > before  # it committed what it handled
