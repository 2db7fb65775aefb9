"""`studio-bench quality` and `studio-bench speed`: measured 3D quality against the world's ground truth, and
per-op speed beside reference implementations. Results go to docs/benchmarks.md (see docs/benchmarking.md)."""
