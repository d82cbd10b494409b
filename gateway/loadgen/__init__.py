"""Load generation: the HTTP/1.1 client connection, the open- and closed-loop engine, the
report, and ``serve-gateway bench``. Shared with the benchmarks in ``bench/``."""
