"""A bar's length: the one place that turns a time signature into time.

A bar of n/d holds n notes of a whole note's d-th part: n * 4 / d quarter notes (3/8 is one and a
half quarters, 6/8 three, 2/2 four). Every room that lays bars out (the codec's held notes, the
grammar's positions, the sanity check, the tasks' shuffled control, the piano roll, the corpus
profile) asks here, so no one rounds a compound metre to whole beats on its own.
"""

from __future__ import annotations


def bar_length(numerator: int, denominator: int, per_quarter: float = 1) -> float:
    """The length of a bar of `numerator`/`denominator`: in quarter notes, or in ticks with
    `per_quarter` the ticks per quarter note (`int()` of it is the whole ticks a bar spans)."""
    return numerator * 4 * per_quarter / denominator


def bar_end_after(time_signatures: list[tuple[int, int, int]], ticks_per_quarter: int, tick: int) -> int:
    """The end (in ticks) of the bar that holds `tick`, bars laid from 0 by the (time, numerator,
    denominator) metres (4/4 before any)."""
    signatures = sorted(time_signatures) or [(0, 4, 4)]
    start, index = 0, 0
    while True:
        while index + 1 < len(signatures) and signatures[index + 1][0] <= start:
            index += 1
        length = max(1, int(bar_length(signatures[index][1], signatures[index][2], ticks_per_quarter)))
        if start + length > tick:
            return start + length
        start += length


def end_of_bars(time_signatures: list[tuple[int, int, int]], ticks_per_quarter: int, bars: int) -> int:
    """The tick where the first `bars` bars end, bars laid from 0 by the (time, numerator,
    denominator) metres (4/4 before any)."""
    end = 0
    for _ in range(bars):
        end = bar_end_after(time_signatures, ticks_per_quarter, end)
    return end
