"""`make bench`: the suite's benchmarks, run against real processes on loopback (docs/benchmarks.md)."""
