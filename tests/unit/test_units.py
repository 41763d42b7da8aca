"""One way to print times and sizes (host/units.py), as a table of cases."""

import pytest

from edgedeploy.host import units


@pytest.mark.parametrize("value, text", [
    (None, "–"), (0, "0 µs"), (0.0012, "1.2 µs"), (0.001, "1.0 µs"), (0.0099, "9.9 µs"),
    (0.165336, "165 µs"), (0.9994, "999 µs"), (1.0, "1.00 ms"), (1.234, "1.23 ms"),
    (12.345, "12.3 ms"), (123.4, "123 ms"), (9999.0, "9999 ms"), (12_345.0, "12.3 s"),
    (-0.05, "-50 µs"),
])
def test_ms(value, text):
    assert units.ms(value) == text


@pytest.mark.parametrize("n, text", [
    (None, "–"), (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1_278_268, "1248.3 KiB"),
    (10 * 1024 ** 2 - 1, "10240.0 KiB"), (10 * 1024 ** 2, "10.0 MiB"),
    (63_000_000, "60.1 MiB"), (20 * 1024 ** 3, "20.0 GiB"),
])
def test_size(n, text):
    assert units.size(n) == text


def test_the_same_file_is_the_same_number_in_a_table_and_in_prose():
    """Issue 15: the compile table divided by 1000 and the results table by 1024."""
    n = 1_278_268
    assert units.kib(n) == "1248.3" and units.size(n) == "1248.3 KiB"


@pytest.mark.parametrize("f, text", [(None, "–"), (0.9333, "93.33 %"), (1.0, "100.00 %")])
def test_pct(f, text):
    assert units.pct(f) == text
