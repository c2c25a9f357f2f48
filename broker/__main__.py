import sys

from broker.node import main

sys.exit(main())
