"""Benchmarks: speed and size measured side by side against a reference in the same process.

One module per table (``classification``, ``detection``, ``segmentation``, ``deploy``,
``train_step``), each with ``run(args) -> markdown`` and, where it has options of its own,
``add_options(parser)``; ``cli.main`` (``tools/benchmark.py``) puts them behind one parser so
that ``--help`` lists every option. Each also runs alone: ``python -m mnv2_tasks.benchmarks.<name>``.
"""
