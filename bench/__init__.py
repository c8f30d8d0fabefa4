"""Benchmarks of eventlive-rpc: ``python -m bench [--quick]`` (see bench/README.md)."""
