"""Programs built on the log, outside the library: the log benchmark
(``bench``), its pysyncobj baseline node (``bench_pysyncobj``), the demo
key-value node the benchmark and tests run (``kvnode``) and the store
micro-benchmark (``bench_store``). Nothing in ``raftmq.dledger`` imports them."""
