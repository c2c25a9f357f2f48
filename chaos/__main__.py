"""``python -m raftmq.chaos run ...``: the same command as ``raftmq chaos run``."""

from raftmq.chaos.cli import chaos_group

chaos_group(prog_name="raftmq chaos")
