"""Benchmarks: ``python -m horovod_huffcomp.bench codec``."""
