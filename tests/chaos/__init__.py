"""The chaos suite: the whole system under a seeded schedule of changes and faults, checked for
exact convergence (see tests/chaos/run.py for the phases, oracle.py for what is checked).

`bench/chaos.py --seed N --ops M` runs one; tests/test_chaos.py runs a few fixed seeds.
"""
