"""Runnable examples: ``python -m ezpz.examples.<name>``.

- ``train``: a small DDP training job (MLP on a synthetic teacher task) that
  uses History with train/ and eval/ groups, memory metrics, timing,
  throughput and MFU, StopWatch and finalize.
"""
