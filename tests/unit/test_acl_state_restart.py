"""ACL state in the broker's state machine: applied from the log, held by the
checkpoint a restarted node loads and by the snapshot a lagging follower installs."""

from __future__ import annotations

from pathlib import Path

from raftmq.broker import commands
from raftmq.broker.commands import AclAddUser, AclGrant, AclRemoveUser
from raftmq.broker.statemachine import BrokerState

LOG = [AclAddUser("a", "secret-a-0123456789", False), AclGrant("a", "topic", "t*", ("pub",)),
       AclAddUser("b", "secret-b-0123456789", True), AclRemoveUser("b")]


def applied(path: Path) -> BrokerState:
    st = BrokerState(path, "g1")
    for i, cmd in enumerate(LOG, start=1):
        st.apply(i, commands.encode(cmd), 0)
    return st


def test_a_checkpoint_holds_the_users(tmp_path: Path) -> None:
    st = applied(tmp_path)
    st.checkpoint()
    st.close()
    again = BrokerState(tmp_path, "g1")
    assert again.load_checkpoint() == len(LOG)
    assert again.acl.to_doc() == [["a", "secret-a-0123456789", False, [["topic", "t*", ["pub"]]]]]
    again.close()


def test_a_snapshot_holds_the_users(tmp_path: Path) -> None:
    leader = applied(tmp_path / "leader")
    follower = BrokerState(tmp_path / "follower", "g1")
    follower.restore(leader.snapshot())
    assert follower.acl.to_doc() == leader.acl.to_doc() and follower.acl.users["a"].allows("topic", "t1", "pub")
    follower.wipe()
    assert follower.acl.users == {}  # a rebuild re-applies the log from scratch
    leader.close()
    follower.close()
