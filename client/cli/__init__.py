"""The ``raftmq`` command line (click): ``main`` is the console script.

Each command parses its options, calls the code that does the work, and
turns failures into one line and an exit code. One module per command
family, plus what they share:

- data commands, through the Python client: ``produce`` (with ``stdin``),
  ``consume``, ``topic``, ``group``, ``message``, ``acl``;
- ``cluster`` (a local group, ``client.local.cluster``) and ``bench``
  (``client.local.bench``);
- ``passthrough``: ``broker``, ``bench log`` and ``chaos`` run another
  program of RaftMQ in this process's place, with their arguments unchanged;
- ``servers``: which group a data command talks to (``--server``,
  ``RAFTMQ_SERVER``, the local group's state file) and the shared options;
- ``output``: lines, tables and JSON; ``usage``: one-line usage errors;
- ``error_lines``: a failure's one line, chosen by the error's type;
  ``runner``: runs a command's coroutine, prints that line, sets the exit code.
"""

from __future__ import annotations

import click

# The modules, not their commands, are bound here: ``raftmq.client.cli.produce``
# stays the module (a command of the same name would hide it from importers).
from raftmq.client.cli import acl, bench, cluster, consume, group, message, passthrough, produce, topic


@click.group()
@click.version_option(package_name="raftmq")
def main() -> None:
    """RaftMQ: a RocketMQ-style message broker on Raft groups."""


for _command in (passthrough.broker, bench.bench, cluster.cluster, produce.produce, consume.consume, topic.topic,
                 group.group, message.message, acl.acl, passthrough.chaos):
    main.add_command(_command)

__all__ = ["main"]
