"""``python -m raftmq.broker``: run one broker node (see raftmq.broker.node)."""

import sys

from raftmq.broker.node import main

sys.exit(main())
