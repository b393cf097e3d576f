"""Benchmarks: statemap transforms against hand-written pure-JAX equivalents, in the same process.

Run ``python -m bench.run`` (full suite, writes ``bench/results/``) or ``python -m bench.run --smoke`` (tiny
sizes, writes to a temporary directory). See ``bench/README.md`` for the method and the latest numbers.
"""
