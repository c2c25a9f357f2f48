"""``python -m chaos run ...``: the same command as ``raftmq chaos run``."""

from chaos.cli import chaos_group

chaos_group(prog_name="raftmq chaos")
