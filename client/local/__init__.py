"""Tools for a local broker group on this machine, outside the client
library: the process manager behind ``raftmq cluster`` (``cluster``) and the
produce/consume benchmark behind ``raftmq bench`` (``bench``). The client
library (Producer, consumers, Admin) never imports them."""
