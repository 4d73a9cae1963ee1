"""vecdex benchmarks: each is ``python -m bench.NAME`` and writes ``bench/results/NAME.json``.

Benchmarks are never run as tests; they need the ``[bench]`` extra (``pip install -e '.[bench]'``).
"""
