"""Chaos testing of RaftMQ against real broker processes (``raftmq chaos run``).

- ``schedule``: the seeded fault schedule (pure);
- ``nemesis``: the local group's processes and the faults done to them;
- ``netns``: partitions with iptables inside the run's own network namespace;
- ``damage``: storage damage to a stopped node's files (a bit of a committed
  log entry, ConsumeQueue, IndexFile, checkpoint), parsed from the documented
  on-disk formats, and the nodes' logs read back for comparison;
- ``workload``: producers and consumers through ``client``, recording a history;
- ``history``: the operation record;
- ``checker``: pure checks of a history against what the nodes hold at the end;
- ``runner``: one run from start to verdict; ``report``: JSON and HTML;
- ``cli``: the ``chaos`` click group.

It imports ``client`` and the standard library only (and matplotlib, when
installed, for the report's picture).
"""
