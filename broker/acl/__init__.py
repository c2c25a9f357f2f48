"""Access control: users, their permissions, and who may do what.

- ``permissions``: the replicated ACL state (users, secrets, grants), applied
  from log commands on every node, checkpointed with the broker state; pure.
- ``claims``: which user a consumer's ``client_id`` belongs to, so that no
  user can release or take another's queue locks (leader-local, pure).

The HTTP side (who sent a request, what each route needs) is
``broker.http.auth``; the signing contract is ``raftmq.signing``.
"""
