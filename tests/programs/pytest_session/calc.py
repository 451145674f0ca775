"""The code under test of the pytest session in tests/test_under_pytest.py (the bug: add)."""


def add(a, b):
    return a - b


def mul(a, b):
    return a * b
