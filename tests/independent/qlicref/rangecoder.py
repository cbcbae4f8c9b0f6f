"""The range decoder (FORMAT.md 4.1): 32-bit words, a 64-bit state, 24-bit probabilities.

Python integers, one symbol at a time; every quantity is reduced modulo 2**64 where the
document says the arithmetic wraps.
"""

import bisect

PRECISION = 24
MASK64 = (1 << 64) - 1


class CorruptStream(ValueError):
    """The words cannot be a stream of these models."""


class Categorical:
    """A model given by integer counts summing to 2**24 (FORMAT.md 4.2)."""

    def __init__(self, counts):
        self.cdf = [0]
        for c in counts:
            self.cdf.append(self.cdf[-1] + int(c))
        if self.cdf[-1] != 1 << PRECISION or min(counts) < 1:
            raise ValueError("counts must be >= 1 and sum to 2**24")

    def lookup(self, quantile):
        symbol = bisect.bisect_right(self.cdf, quantile) - 1
        return symbol, self.cdf[symbol], self.cdf[symbol + 1] - self.cdf[symbol]


class Uniform:
    """``size`` equally likely symbols, ``size`` a power of two from 2 to 2**16 (4.2)."""

    def __init__(self, size):
        self.per_bin = (1 << PRECISION) // size

    def lookup(self, quantile):
        symbol = quantile // self.per_bin
        return symbol, symbol * self.per_bin, self.per_bin


class RangeDecoder:
    def __init__(self, words):
        self.words = [int(w) for w in words]
        self.pos = 0
        self.lower, self.range = 0, MASK64
        # The point is the first two words, high word first (zeros past the end).
        self.point = (self._next() << 32) | self._next()

    def _next(self):
        if self.pos < len(self.words):
            self.pos += 1
            return self.words[self.pos - 1]
        return 0

    def decode(self, model):
        scale = self.range >> PRECISION
        quantile = ((self.point - self.lower) & MASK64) // scale
        if quantile >= 1 << PRECISION:
            raise CorruptStream("quantile outside the model")
        symbol, left, probability = model.lookup(quantile)
        self.lower = (self.lower + scale * left) & MASK64
        self.range = scale * probability
        if self.range < 1 << 32:
            self.lower = (self.lower << 32) & MASK64
            self.range <<= 32
            self.point = ((self.point << 32) & MASK64) | self._next()
        return symbol
