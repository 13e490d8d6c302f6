"""Benchmarks, coverage table, paper-table and study reproductions, thin over the package; `oracle` is the authors' way
of AG-CAM that these scripts and the tests compare the explainers with."""
