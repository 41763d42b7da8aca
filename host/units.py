"""How edgedeploy prints times and sizes, everywhere (compile table, results table, HTML report,
status, bench lines): one place, so the same file never shows as two numbers.

- Sizes are binary: 1 KiB = 1024 bytes. Tables put one unit in the column header and plain
  numbers in the cells (``kib``); prose picks the prefix (``size``: B, KiB, MiB, GiB).
- Times are milliseconds from 1 ms up (``1.23 ms``, ``12.3 ms``, ``123 ms``), microseconds below
  (``165 µs``, ``1.2 µs``), seconds from 10 s: three significant digits.
- Missing values print as an en dash.
"""

from __future__ import annotations

DASH = "–"
KiB = 1024


def _sig3(v: float) -> str:
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def ms(value: float | None) -> str:
    """A duration given in milliseconds, in µs below 1 ms."""
    if value is None:
        return DASH
    v = float(value)
    if v < 0:
        return "-" + ms(-v)
    if v == 0:
        return "0 µs"
    if v < 1:
        us = v * 1000
        return f"{us:.1f} µs" if us < 10 else f"{us:.0f} µs"
    if v >= 10_000:
        return f"{_sig3(v / 1000)} s"
    return f"{_sig3(v)} ms"


def kib(n: int | float | None, digits: int = 1) -> str:
    """Bytes as a number of KiB, for a column headed "KiB"."""
    return DASH if n is None else f"{n / KiB:.{digits}f}"


def size(n: int | float | None) -> str:
    """Bytes with a binary prefix: B below 1 KiB, KiB below 10 MiB (so model files compare in
    one unit: 1248.3 KiB), MiB below 10 GiB, then GiB; one decimal."""
    if n is None:
        return DASH
    n = float(n)
    if n < KiB:
        return f"{n:.0f} B"
    if n < 10 * KiB ** 2:
        return f"{n / KiB:.1f} KiB"
    if n < 10 * KiB ** 3:
        return f"{n / KiB ** 2:.1f} MiB"
    return f"{n / KiB ** 3:.1f} GiB"


def pct(fraction: float | None, digits: int = 2) -> str:
    """A fraction as a percentage: 0.9333 → 93.33 %."""
    return DASH if fraction is None else f"{100 * fraction:.{digits}f} %"
