"""The OpenAPI 3.1 document of HTTP API v1, served at ``GET /v1/openapi.json``.

Kept beside the routes it describes; ``tests`` check that every route in
``broker.http.app.ROUTES`` is documented here and nothing else is.
"""

from __future__ import annotations

from typing import Any


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema},
                                                    "application/msgpack": {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema},
                                          "application/msgpack": {"schema": schema}}}


def _path_param(name: str, kind: str = "string", description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": kind}, "description": description}


def _query(name: str, kind: str = "integer", required: bool = False, description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": {"type": kind}, "description": description}


REDIRECT = {"description": "This node is a follower: repeat the request at the leader (Location header; body names the leader)",
            "headers": {"Location": {"schema": {"type": "string"}}},
            "content": {"application/json": {"schema": _ref("NotLeader")}}}
NO_LEADER = {"description": "No leader known (election in progress) or outcome unknown; retry after Retry-After seconds",
             "headers": {"Retry-After": {"schema": {"type": "integer"}}},
             "content": {"application/json": {"schema": _ref("Error")}}}
WRITE_ERRORS = {"307": REDIRECT, "503": NO_LEADER, "400": _err("Bad input"), "415": _err("Unsupported Content-Type")}

ACL_WRITE_ERRORS = {"404": _err("No such user (user_not_found)"),
                    "409": _err("ACL is off on this node (acl_disabled), or the user exists (user_exists)"),
                    **WRITE_ERRORS}

SCHEMAS: dict[str, Any] = {
    "AclUser": {"type": "object", "required": ["access_key", "admin", "grants"],
                "properties": {"access_key": {"type": "string"}, "admin": {"type": "boolean"},
                               "grants": {"type": "array", "items": {"type": "object"}},
                               "bootstrap": {"type": "boolean"}}},
    "AclUsers": {"type": "object", "required": ["enabled", "users"],
                 "properties": {"enabled": {"type": "boolean"},
                                "users": {"type": "array", "items": _ref("AclUser")}}},
    "AclUserCreate": {"type": "object", "required": ["access_key", "secret_key"], "additionalProperties": False,
                      "properties": {"access_key": {"type": "string"}, "secret_key": {"type": "string"},
                                     "admin": {"type": "boolean"}}},
    "AclGrant": {"type": "object", "required": ["resource", "pattern", "actions"], "additionalProperties": False,
                 "properties": {"resource": {"enum": ["topic", "group"]}, "pattern": {"type": "string"},
                                "actions": {"type": "array", "items": {"enum": ["pub", "sub"]}}}},
    "Error": {"type": "object", "required": ["error", "message"],
              "properties": {"error": {"type": "string", "description": "machine-readable code"},
                             "message": {"type": "string"}}},
    "NotLeader": {"type": "object", "required": ["error", "leader"],
                  "properties": {"error": {"const": "not_leader"}, "message": {"type": "string"},
                                 "leader": {"type": "string", "description": "the leader's HTTP URL"}}},
    "Health": {"type": "object", "required": ["node_id", "role", "term", "leader_id", "leader_url", "commit_index",
                                              "applied_index"],
               "properties": {"node_id": {"type": "string"}, "group": {"type": "string"},
                              "role": {"enum": ["leader", "follower", "candidate"]}, "term": {"type": "integer"},
                              "leader_id": {"type": ["string", "null"]}, "leader_url": {"type": ["string", "null"]},
                              "commit_index": {"type": "integer"}, "applied_index": {"type": "integer"},
                              "healthy": {"type": "boolean"}}},
    "Cluster": {"type": "object", "required": ["group", "leader_id", "members"],
                "properties": {"group": {"type": "string"}, "leader_id": {"type": ["string", "null"]},
                               "leader_url": {"type": ["string", "null"]}, "term": {"type": "integer"},
                               "members": {"type": "array", "items": {
                                   "type": "object", "required": ["id", "http_url", "raft_addr", "role"],
                                   "properties": {"id": {"type": "string"}, "http_url": {"type": "string"},
                                                  "raft_addr": {"type": "string"}, "role": {"type": "string"},
                                                  "match_index": {"type": ["integer", "null"]},
                                                  "lag": {"type": ["integer", "null"]}}}}}},
    "TopicCreate": {"type": "object", "required": ["name"],
                    "properties": {"name": {"type": "string", "pattern": "^[A-Za-z0-9_.%|-]{1,127}$"},
                                   "queues": {"type": "integer", "minimum": 1, "default": 4}}},
    "TopicUpdate": {"type": "object", "required": ["queues"],
                    "properties": {"queues": {"type": "integer", "minimum": 1, "description": "can only grow"}}},
    "Topic": {"type": "object", "required": ["name", "queues"],
              "properties": {"name": {"type": "string"}, "queues": {"type": "integer"},
                             "queue_offsets": {"type": "array", "items": {
                                 "type": "object", "properties": {"queue_id": {"type": "integer"},
                                                                  "min_offset": {"type": "integer"},
                                                                  "max_offset": {"type": "integer"}}}}}},
    "TopicList": {"type": "object", "properties": {"topics": {"type": "array", "items": {
        "type": "object", "properties": {"name": {"type": "string"}, "queues": {"type": "integer"}}}}}},
    "OutMessage": {"type": "object", "additionalProperties": False,
                   "properties": {"body": {"type": "string", "description": "UTF-8 text (bytes in msgpack)"},
                                  "body_b64": {"type": "string", "description": "binary body, base64"},
                                  "tags": {"type": "string"},
                                  "keys": {"type": ["array", "string"], "items": {"type": "string"},
                                           "description": "a list, or one string of space-separated keys"},
                                  "properties": {"type": "object", "additionalProperties": {"type": "string"}},
                                  "queue_id": {"type": "integer"},
                                  "sharding_key": {"type": "string", "description": "same key, same queue"},
                                  "born_ts": {"type": "integer"}}},
    "ProduceRequest": {"type": "object", "required": ["messages"], "additionalProperties": False,
                       "properties": {"messages": {"type": "array", "items": _ref("OutMessage"), "minItems": 1},
                                      "producer_id": {"type": "string"},
                                      "sequence": {"type": "integer", "minimum": 0,
                                                   "description": "with producer_id: a retry is not stored twice"}}},
    "ProduceResponse": {"type": "object", "required": ["results"], "properties": {"results": {"type": "array", "items": {
        "type": "object", "required": ["msg_id", "queue_id", "queue_offset"],
        "properties": {"msg_id": {"type": "string"}, "queue_id": {"type": "integer"},
                       "queue_offset": {"type": "integer"}}}}}},
    "Message": {"type": "object",
                "required": ["queue_offset", "msg_id", "tags", "keys", "properties", "born_ts", "store_ts"],
                "properties": {"queue_offset": {"type": "integer"}, "msg_id": {"type": "string"},
                               "topic": {"type": "string"}, "queue_id": {"type": "integer"},
                               "body": {"type": "string"}, "body_b64": {"type": "string"},
                               "tags": {"type": "string"}, "keys": {"type": "array", "items": {"type": "string"}},
                               "properties": {"type": "object", "additionalProperties": {"type": "string"}},
                               "born_ts": {"type": "integer"}, "store_ts": {"type": "integer"}}},
    "PullResponse": {"type": "object", "required": ["messages", "next_offset", "max_offset"],
                     "properties": {"messages": {"type": "array", "items": _ref("Message")},
                                    "next_offset": {"type": "integer"}, "max_offset": {"type": "integer"},
                                    "min_offset": {"type": "integer"}}},
    "MessageList": {"type": "object", "properties": {"messages": {"type": "array", "items": _ref("Message")}}},
    "Offsets": {"type": "object", "properties": {"group": {"type": "string"}, "topic": {"type": "string"},
                                                "offsets": {"type": "array", "items": {
                                                    "type": "object",
                                                    "properties": {"queue_id": {"type": "integer"},
                                                                   "offset": {"type": ["integer", "null"]}}}}}},
    "OffsetCommit": {"type": "object", "required": ["topic", "queue_id", "offset"],
                     "properties": {"topic": {"type": "string"}, "queue_id": {"type": "integer"},
                                    "offset": {"type": "integer", "minimum": 0},
                                    "reset": {"type": "boolean", "default": False,
                                              "description": "allow moving the offset back (seek); otherwise a "
                                                             "lower offset leaves the stored one unchanged"}}},
    "Lag": {"type": "object", "properties": {"group": {"type": "string"}, "topic": {"type": "string"},
                                            "lag": {"type": "integer"},
                                            "queues": {"type": "array", "items": {
                                                "type": "object",
                                                "properties": {"queue_id": {"type": "integer"},
                                                               "committed_offset": {"type": ["integer", "null"]},
                                                               "max_offset": {"type": "integer"},
                                                               "lag": {"type": "integer"}}}}}},
    "Heartbeat": {"type": "object", "required": ["client_id", "topic"],
                  "properties": {"client_id": {"type": "string"}, "topic": {"type": "string"}}},
    "HeartbeatResponse": {"type": "object", "required": ["members", "session_timeout_ms"],
                          "properties": {"members": {"type": "array", "items": {"type": "string"}},
                                         "session_timeout_ms": {"type": "integer"}}},
    "Members": {"type": "object", "properties": {"group": {"type": "string"}, "topic": {"type": "string"},
                                                "members": {"type": "array", "items": {
                                                    "type": "object",
                                                    "properties": {"client_id": {"type": "string"},
                                                                   "last_heartbeat_ms": {"type": "integer"}}}}}},
    "LockRequest": {"type": "object", "required": ["client_id", "topic", "queue_ids"],
                    "properties": {"client_id": {"type": "string"}, "topic": {"type": "string"},
                                   "queue_ids": {"type": "array", "items": {"type": "integer"}},
                                   "lease_ms": {"type": "integer", "default": 10000}}},
    "LockResponse": {"type": "object", "properties": {"locked": {"type": "array", "items": {"type": "integer"}},
                                                     "lease_ms": {"type": "integer"}}},
    "UnlockRequest": {"type": "object", "required": ["client_id", "topic", "queue_ids"],
                      "properties": {"client_id": {"type": "string"}, "topic": {"type": "string"},
                                     "queue_ids": {"type": "array", "items": {"type": "integer"}}}},
    "UnlockResponse": {"type": "object", "properties": {"unlocked": {"type": "array", "items": {"type": "integer"}}}},
}


def _int64(node: Any) -> Any:
    """``node`` with ``format: int64`` on every integer schema: the server refuses
    integers outside a signed 64-bit integer (400 integer_out_of_range)."""
    if isinstance(node, dict):
        out = {k: _int64(v) for k, v in node.items()}
        kind = out.get("type")
        if kind == "integer" or (isinstance(kind, list) and "integer" in kind):
            out.setdefault("format", "int64")
        return out
    if isinstance(node, list):
        return [_int64(v) for v in node]
    return node


def _add_common_errors(paths: dict[str, Any]) -> None:
    """Answers any operation of a kind can give, added where not listed: 400
    for a malformed parameter or body (an integer outside int64, a lone
    surrogate, nesting past max_json_depth, ...); 413 and 415 for a body
    over max_request_bytes or of another Content-Type; 401 and 403 when ACL
    is on, everywhere but the health check and this document."""
    for item in paths.values():
        shared = item.get("parameters", [])
        for method, op in item.items():
            if method == "parameters":
                continue
            responses = op["responses"]
            if shared or op.get("parameters") or "requestBody" in op:
                responses.setdefault("400", _err("Bad input"))
            if "requestBody" in op:
                responses.setdefault("413", _err("Request body over max_request_bytes"))
                responses.setdefault("415", _err("Unsupported Content-Type"))
            if op is not paths["/v1/health"].get("get") and op is not paths["/v1/openapi.json"].get("get"):
                responses.setdefault("401", _err("ACL on: no valid signature or token (unauthenticated)"))
                responses.setdefault("403", _err("ACL on: the user lacks the permission (forbidden, "
                                                 "client_id_taken)"))


def openapi_document() -> dict[str, Any]:
    topic = _path_param("topic", description="topic name")
    group = _path_param("group", description="consumer group")
    topic_q = _query("topic", "string", required=True)
    access_key = _path_param("access_key", description="a user's access key")
    paths: dict[str, Any] = {
        "/v1/health": {"get": {"summary": "This node's role, term, leader and indexes",
                               "responses": {"200": _ok(_ref("Health"))}}},
        "/v1/cluster": {"get": {"summary": "The group's members with roles and replication lag",
                                "responses": {"200": _ok(_ref("Cluster"))}}},
        "/v1/topics": {
            "post": {"summary": "Create a topic (repeating it with the same settings is 200)",
                     "requestBody": _body(_ref("TopicCreate")),
                     "responses": {"200": _ok(_ref("Topic")), "409": _err("Exists with other settings"),
                                   **WRITE_ERRORS}},
            "get": {"summary": "List topics", "responses": {"200": _ok(_ref("TopicList"))}},
        },
        "/v1/topics/{topic}": {
            "parameters": [topic],
            "get": {"summary": "One topic with each queue's min and max offset",
                    "responses": {"200": _ok(_ref("Topic")), "404": _err("Unknown topic")}},
            "put": {"summary": "Grow a topic's queue count", "requestBody": _body(_ref("TopicUpdate")),
                    "responses": {"200": _ok(_ref("Topic")), "404": _err("Unknown topic"), **WRITE_ERRORS}},
        },
        "/v1/topics/{topic}/messages": {
            "parameters": [topic],
            "post": {"summary": "Produce messages; answered once majority-committed and applied",
                     "requestBody": _body(_ref("ProduceRequest")),
                     "responses": {"200": _ok(_ref("ProduceResponse")), "404": _err("Unknown topic or queue"),
                                   "413": _err("Message, batch or request too large"), **WRITE_ERRORS}},
        },
        "/v1/topics/{topic}/queues/{queue}/messages": {
            "parameters": [topic, _path_param("queue", "integer", "queue id")],
            "get": {"summary": "Committed messages from an offset, long-polling up to wait_ms when none",
                    "parameters": [_query("offset", description="first queue offset (default 0)"),
                                   _query("max", description="at most this many messages (default 32)"),
                                   _query("wait_ms", description="long-poll this long when none (default 0)"),
                                   _query("tags", "string", description="tag filter like a||b")],
                    "responses": {"200": _ok(_ref("PullResponse")), "400": _err("Bad offset or arguments"),
                                  "404": _err("Unknown topic or queue")}},
        },
        "/v1/messages": {
            "get": {"summary": "Messages by key (IndexFile), newest first",
                    "parameters": [_query("key", "string", required=True), _query("begin_ts"), _query("end_ts"),
                                   _query("max")],
                    "responses": {"200": _ok(_ref("MessageList")), "400": _err("Missing key")}},
        },
        "/v1/messages/{msg_id}": {
            "parameters": [_path_param("msg_id", description="group name and physical offset")],
            "get": {"summary": "One message by id",
                    "responses": {"200": _ok(_ref("Message")), "400": _err("Malformed id"),
                                  "404": _err("No such message")}},
        },
        "/v1/groups/{group}/offsets": {
            "parameters": [group],
            "get": {"summary": "Committed offsets per queue", "parameters": [topic_q],
                    "responses": {"200": _ok(_ref("Offsets")), "404": _err("Unknown topic")}},
            "post": {"summary": "Commit an offset (replicated through the log)",
                     "requestBody": _body(_ref("OffsetCommit")),
                     "responses": {"200": _ok(_ref("OffsetCommit")), "404": _err("Unknown topic or queue"),
                                   **WRITE_ERRORS}},
        },
        "/v1/groups/{group}/lag": {
            "parameters": [group],
            "get": {"summary": "Per-queue committed offset, max offset and lag", "parameters": [topic_q],
                    "responses": {"200": _ok(_ref("Lag")), "404": _err("Unknown topic")}},
        },
        "/v1/groups/{group}/heartbeat": {
            "parameters": [group],
            "post": {"summary": "A consumer's heartbeat; answers the group's live members for the topic (leader only)",
                     "requestBody": _body(_ref("Heartbeat")),
                     "responses": {"200": _ok(_ref("HeartbeatResponse")), "404": _err("Unknown topic"),
                                   **WRITE_ERRORS}},
        },
        "/v1/groups/{group}/members": {
            "parameters": [group],
            "get": {"summary": "Live consumers of the group for a topic (leader only)", "parameters": [topic_q],
                    "responses": {"200": _ok(_ref("Members")), "404": _err("Unknown topic"), **WRITE_ERRORS}},
        },
        "/v1/groups/{group}/locks": {
            "parameters": [group],
            "post": {"summary": "Lock queues for orderly consumption (lease; re-locking renews)",
                     "requestBody": _body(_ref("LockRequest")),
                     "responses": {"200": _ok(_ref("LockResponse")), "404": _err("Unknown topic or queue"),
                                   **WRITE_ERRORS}},
        },
        "/v1/groups/{group}/unlock": {
            "parameters": [group],
            "post": {"summary": "Release queue locks", "requestBody": _body(_ref("UnlockRequest")),
                     "responses": {"200": _ok(_ref("UnlockResponse")), "404": _err("Unknown topic"),
                                   **WRITE_ERRORS}},
        },
        "/v1/acl/users": {
            "get": {"summary": "Users and their grants, never their secrets",
                    "responses": {"200": _ok(_ref("AclUsers"))}},
            "post": {"summary": "Add a user (admin; a log command)", "requestBody": _body(_ref("AclUserCreate")),
                     "responses": {"200": _ok(_ref("AclUser")), **ACL_WRITE_ERRORS}},
        },
        "/v1/acl/users/{access_key}": {
            "parameters": [access_key],
            "delete": {"summary": "Remove a user: its signatures and token stop working (admin)",
                       "responses": {"200": _ok(_ref("AclUser")), **ACL_WRITE_ERRORS}},
        },
        "/v1/acl/users/{access_key}/grants": {
            "parameters": [access_key],
            "post": {"summary": "Grant actions on topics or groups matching a pattern (admin)",
                     "requestBody": _body(_ref("AclGrant")),
                     "responses": {"200": _ok(_ref("AclUser")), **ACL_WRITE_ERRORS}},
        },
        "/v1/acl/users/{access_key}/revoke": {
            "parameters": [access_key],
            "post": {"summary": "Take back actions granted on a pattern (admin)", "requestBody": _body(_ref("AclGrant")),
                     "responses": {"200": _ok(_ref("AclUser")), **ACL_WRITE_ERRORS}},
        },
        "/v1/openapi.json": {"get": {"summary": "This document",
                                     "responses": {"200": {"description": "OpenAPI 3.1 document"}}}},
    }
    _add_common_errors(paths)
    return {
        "openapi": "3.1.0",
        "info": {"title": "RaftMQ broker HTTP API", "version": "1",
                 "description": "RocketMQ-style topics and queues on a Raft-replicated log. JSON by default; "
                                "msgpack with Content-Type or Accept application/msgpack."},
        "paths": _int64(paths),
        "components": {"schemas": _int64(SCHEMAS)},
    }
