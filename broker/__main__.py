import sys

from raftmq.broker.node import main

sys.exit(main())
