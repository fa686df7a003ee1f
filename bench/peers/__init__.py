"""Other servers measured beside the gateway in `make bench` (`BENCH_PEERS=postgraphile`): each is
installed by the run itself under `.data/bench/peers/`, started on the benchmark's own database,
checked against our SQL, and loaded by the same wrk harness as the gateway (docs/performance.md,
"Peers")."""

PEERS = ("postgraphile",)
