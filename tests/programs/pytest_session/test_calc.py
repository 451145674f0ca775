"""A test module forkpoint runs under pytest: test_add fails until calc.add is fixed."""

import pytest

from calc import add, mul

EXPENSIVE = []


@pytest.fixture
def table():
    EXPENSIVE.append("built")
    print("table built")
    return {"two": 2, "three": 3}


def test_mul(table):
    assert mul(table["two"], table["three"]) == 6


def test_add(table):
    total = add(table["two"], table["three"])
    assert total == 5


@pytest.mark.parametrize("n", [1, 2, 3])
def test_after(n):
    assert mul(n, 1) == n
