"""Benchmarks that print the product's figures; run each as ``python -m bench.NAME`` from the checkout
(``python -m bench.run_all`` runs them all and writes PERFORMANCE.md). Shared helpers: bench/common.py."""
