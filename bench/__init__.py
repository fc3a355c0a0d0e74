"""payrun's benchmarks: `python -m bench [name ...] [--quick]` (or `make bench`). See docs/performance.md."""
