"""Measuring, for every lesson and the benchmarks: ``timing`` (warm up, repeat, alternate), ``counting`` (FLOPs
and bytes from a config), ``roofline`` (the two ceilings, published roofs), ``machine`` (this machine's roofs),
``random_weights`` (real shapes, fast), ``decode_step`` (one decode step timed again and again), ``profiler``."""
