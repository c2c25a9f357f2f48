"""Fuzzing HTTP API v1 from its own OpenAPI document against a real 3-node
group (issue 11): schemathesis generates requests for every documented
operation, valid ones and invalid ones (wrong types, missing fields, values
outside the schema), and sends them to the leader and to a follower. For
every answer: no 5xx; the status is one the document lists for that
operation; the body matches the documented schema, error answers included;
the Content-Type is a documented one. Afterwards every node is still
running and the messages produced before the fuzzing read back unchanged.

The number of cases is bounded (``CASES`` per generation mode and node, a
fixed seed), so the run is repeatable and takes well under a minute.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from raftmq.broker.http.openapi import openapi_document
from tests.integration.broker_group import BrokerGroup, http, running_group

pytestmark = pytest.mark.integration

CASES = 100  # per run of ``fuzz``: five runs per generation mode, 1,000 requests in all
SEED = 20261206
TOPICS = ["fuzz-a", "fuzz-b"]
BEFORE = [f"kept-{i}" for i in range(20)]


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerGroup]:
    with running_group(tmp_path_factory.mktemp("fuzz")) as g:
        yield g


def produce_before(url: str) -> dict[str, list[dict[str, Any]]]:
    """Topics the fuzzer may find (their names are in its examples) and messages to read back after."""
    kept: dict[str, list[dict[str, Any]]] = {}
    for topic in TOPICS:
        assert http("POST", url + "/v1/topics", {"name": topic, "queues": 2})[0] == 200
        status, _, body = http("POST", f"{url}/v1/topics/{topic}/messages",
                               {"messages": [{"body": b, "queue_id": 0, "keys": [b]} for b in BEFORE]})
        assert status == 200, body
        kept[topic] = read_queue(url, topic)
    return kept


def read_queue(url: str, topic: str) -> list[dict[str, Any]]:
    status, _, body = http("GET", f"{url}/v1/topics/{topic}/queues/0/messages?offset=0&max={len(BEFORE)}")
    assert status == 200, body
    return [{k: m[k] for k in ("queue_offset", "msg_id", "body", "keys", "born_ts", "store_ts")}
            for m in body["messages"]]


# What schemathesis does not generate by itself (its strings never hold a lone
# surrogate; its integers respect ``format: int64``; its bodies are shallow):
# one value of a generated JSON body or query is replaced by one of these.
HOSTILE = ["surrogate", "integer", "deep"]
OUT_OF_INT64 = [2**63, 2**64, -(2**63) - 1, 10**30]


def leaves(value: Any, where: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every string, integer and key in a decoded JSON value."""
    out: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            out.append((*where, ("key", k)))
            out.extend(leaves(v, (*where, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(leaves(v, (*where, i)))
    elif isinstance(value, (str, int)) and not isinstance(value, bool):
        out.append(where)
    return out


def mutate(value: Any, path: tuple[Any, ...], kind: str, data: st.DataObject) -> Any:
    """``value`` with the leaf at ``path`` made hostile (a copy; ``value`` is left as it is)."""
    if not path:
        if kind == "surrogate":
            return f"{value}\udc80" if isinstance(value, str) else "\udc80"
        if kind == "integer":
            return data.draw(st.sampled_from(OUT_OF_INT64))
        deep: Any = value
        for _ in range(40):
            deep = [deep]
        return deep
    head, rest = path[0], path[1:]
    if isinstance(head, tuple):  # a key of this dict
        key = head[1]
        new_key = f"{key}\ud800" if kind == "surrogate" else key
        return {(new_key if k == key else k): (mutate(v, (), kind, data) if k == key and kind != "surrogate" else v)
                for k, v in value.items()}
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[head] = mutate(value[head], rest, kind, data)
    return copy


def make_hostile(case: Any, kind: str, data: st.DataObject) -> None:
    """Replace one value of ``case``'s JSON body (any kind) or query (integers only)."""
    if kind == "none":
        return
    if case.media_type == "application/json" and isinstance(case.body, (dict, list)):
        paths = leaves(case.body)
        if paths:
            # Sent as the encoded bytes: schemathesis would re-validate a changed
            # object, and its validator cannot hold a lone surrogate.
            case.body = json.dumps(mutate(case.body, data.draw(st.sampled_from(paths)), kind, data)).encode()
    elif kind == "integer" and case.query:
        name = data.draw(st.sampled_from(sorted(case.query)))
        case.query = {**case.query, name: data.draw(st.sampled_from(OUT_OF_INT64))}


def fuzz(base_url: str, mode: GenerationMode, seen: dict[int, int], *, cases: int = 0, kinds: list[str] | None = None,
         writes_to: str | None = None) -> None:
    """``cases`` requests to ``base_url`` over every operation, or with
    ``writes_to`` a topic, over the operations with a body only, that topic in
    their path (so that bodies get past the topic lookup to their checks).
    Each request is made hostile by one of ``kinds`` (None: left as generated)."""
    schema = schemathesis.openapi.from_dict(openapi_document())
    path_parameters = None
    if writes_to is not None:
        schema = schema.include(method=["POST", "PUT"])
        path_parameters = {"topic": writes_to}
    session = requests.Session()

    @seed(SEED)
    @settings(max_examples=cases, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=schema.as_strategy(generation_mode=mode, path_parameters=path_parameters),
           kind=st.sampled_from(kinds or ["none"]), data=st.data())
    def one(case: Any, kind: str, data: st.DataObject) -> None:
        make_hostile(case, kind, data)
        response = case.call(base_url=base_url, session=session, timeout=10, allow_redirects=False)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert response.status_code < 500, (response.status_code, response.text[:500], case.as_curl_command())
        case.validate_response(response, checks=[status_code_conformance, content_type_conformance,
                                                 response_schema_conformance])

    one()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_fuzzing_the_openapi_document_finds_no_5xx_and_no_undocumented_answer(
        group: BrokerGroup, mode: GenerationMode) -> None:
    leader = group.leader().http_url
    kept = produce_before(leader) if mode is GenerationMode.POSITIVE else {t: read_queue(leader, t) for t in TOPICS}
    seen: dict[int, int] = {}
    fuzz(leader, mode, seen, cases=CASES)
    fuzz(group.followers()[0].http_url, mode, seen, cases=CASES)
    for kind in HOSTILE:
        fuzz(leader, mode, seen, cases=CASES, kinds=[kind], writes_to=TOPICS[0])
    print(f"fuzz {mode.value}: {sum(seen.values())} requests; answers by status: {dict(sorted(seen.items()))}")
    assert sum(seen.values()) >= 2 * CASES  # hypothesis did run the cases (it may stop a run early)
    for node in group.nodes:
        assert node.proc is not None and node.proc.poll() is None, f"{node.id} exited\n{group.logs()}"
    leader = group.leader().http_url
    for topic, messages in kept.items():
        assert read_queue(leader, topic) == messages
