"""``python -m raftmq.client.cli ...``: the same as the ``raftmq`` console script."""

from raftmq.client.cli import main

main()
