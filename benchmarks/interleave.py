"""What two interleaved range-coder streams would gain over one: a measurement for a format
decision, not a decoder that qlic uses.

The ``y`` stream is one range-coder stream, so its symbols decode in one chain, each waiting
for the one before (a 64-bit division, a search in the table, the renormalisation): about a
tenth of a two-thread 1920x1080 decode that the second thread cannot share
(``benchmarks/README.md``, "Two threads on an AMD EPYC"). Two streams, each holding every
other symbol of each table's run, can be decoded side by side in one loop, the two chains
overlapping in the core.

This script takes the ``y`` symbols and table indexes of a real encode (all slices as one
sequence), codes them as one stream and as two, and times the table-symbol phase of the
decoder (``engine.rangedecoder.decode_sequence`` step 1, escapes left out) both ways, on
one thread, after checking that both give the encoder's symbols::

    python benchmarks/interleave.py                       # first val photo at 1920x1080
    python benchmarks/interleave.py --size 768x512 --quality 6
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def capture_y(image: np.ndarray, quality: float, model: str = "mse"):
    """The ``y`` symbols and table indexes of an encode, every slice's in slice order, and the
    model's ``y`` tables."""
    from qlic_codec import api
    from qlic_codec.entropy import coder

    got = {}
    original = coder.encode_segments

    def keep(segments, tables):
        got["symbols"] = np.concatenate([s for s, _ in segments]).astype(np.int32)
        got["indexes"] = np.concatenate([i for _, i in segments]).astype(np.int32)
        got["tables"] = tables
        return original(segments, tables)

    coder.encode_segments = keep
    try:
        api.encode(image, quality=quality, model=model)
    finally:
        coder.encode_segments = original
    return got["symbols"], got["indexes"], got["tables"]


def split_alternate(indexes: np.ndarray, tables_count: int) -> np.ndarray:
    """Which stream each position goes to: within each table's positions (in increasing
    order), the first to stream 0, the second to stream 1, and so on."""
    order = np.argsort(indexes, kind="stable")
    rank = np.empty(indexes.size, np.int64)
    starts = np.zeros(tables_count + 1, np.int64)
    np.cumsum(np.bincount(indexes, minlength=tables_count), out=starts[1:])
    rank[order] = np.arange(indexes.size) - starts[indexes[order]]
    return (rank & 1).astype(np.int8)


def _jit():
    from numba import njit

    from qlic_codec.engine.rangedecoder import PRECISION, _advance, _quantile, _search

    @njit(cache=False, nogil=True)
    def one_chain(words, state, counts, cdf, sizes, out):
        # Table symbols of one stream, table by table (step 1 of decode_sequence).
        pos, lower, rng, point = np.int64(state[0]), state[1], state[2], state[3]
        k = 0
        for t in range(sizes.size):
            row, size = cdf[t], sizes[t]
            for _ in range(counts[t]):
                scale, q = _quantile(lower, rng, point)
                if q >= 1 << PRECISION:
                    return -1
                s = _search(row, 0, size, q)
                pos, lower, rng, point = _advance(words, pos, lower, rng, point, scale, row[s],
                                                  row[s + 1] - row[s])
                out[k] = s
                k += 1
        return k

    @njit(cache=False, nogil=True)
    def two_chains(words_a, state_a, words_b, state_b, counts_a, counts_b, cdf, sizes,
                   out_a, out_b):
        # The same over two streams at once: each table's run alternates between them, so
        # a step of the loop decodes one symbol of each, two chains that do not wait on
        # each other. The steps are written out as in one_chain: through an inlined helper
        # returning the state as a tuple, both loops measured about 1.8x slower.
        pa, la, ra, qa = np.int64(state_a[0]), state_a[1], state_a[2], state_a[3]
        pb, lb, rb, qb = np.int64(state_b[0]), state_b[1], state_b[2], state_b[3]
        ka = kb = 0
        for t in range(sizes.size):
            row, size = cdf[t], sizes[t]
            both = min(counts_a[t], counts_b[t])
            for _ in range(both):
                sa_, xa = _quantile(la, ra, qa)
                sb_, xb = _quantile(lb, rb, qb)
                if xa >= 1 << PRECISION or xb >= 1 << PRECISION:
                    return -1
                sa = _search(row, 0, size, xa)
                sb = _search(row, 0, size, xb)
                pa, la, ra, qa = _advance(words_a, pa, la, ra, qa, sa_, row[sa],
                                          row[sa + 1] - row[sa])
                pb, lb, rb, qb = _advance(words_b, pb, lb, rb, qb, sb_, row[sb],
                                          row[sb + 1] - row[sb])
                out_a[ka] = sa
                out_b[kb] = sb
                ka += 1
                kb += 1
            for _ in range(counts_a[t] - both):  # stream 0 holds one more of this table
                sa_, xa = _quantile(la, ra, qa)
                if xa >= 1 << PRECISION:
                    return -1
                sa = _search(row, 0, size, xa)
                pa, la, ra, qa = _advance(words_a, pa, la, ra, qa, sa_, row[sa],
                                          row[sa + 1] - row[sa])
                out_a[ka] = sa
                ka += 1
        return ka + kb

    return one_chain, two_chains


def _stream(symbols, indexes, tables):
    from qlic_codec.engine import rangedecoder
    from qlic_codec.entropy import coder

    data = coder.encode_symbols(symbols, indexes, tables)
    words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
    counts = np.bincount(indexes, minlength=tables.num_tables).astype(np.int64)
    return words, rangedecoder.new_state(words), counts, len(data)


def grouped(symbols, indexes, tables) -> np.ndarray:
    """What the table-symbol phase yields for a sequence: each table's run in increasing
    position, as the symbol's index in its table (escapes as the last one)."""
    t = coder_layout(tables)
    order = np.argsort(indexes, kind="stable")
    idx = indexes[order]
    s = symbols[order].astype(np.int64) - t.offsets[idx]
    last = t.sizes[idx] - 1  # the escape symbol, for a value outside the table's range
    return np.where((s < 0) | (s >= last), last, s)


def coder_layout(tables):
    from qlic_codec.entropy import coder
    return coder.decoder_tables(tables)


def measure(symbols, indexes, tables, repeat: int = 7) -> dict:
    """Both ways, checked against the symbols: seconds (best of ``repeat``) and bytes."""
    layout = coder_layout(tables)
    one_chain, two_chains = _jit()
    side = split_alternate(indexes, tables.num_tables)
    words, state, counts, size1 = _stream(symbols, indexes, tables)
    a, b = side == 0, side == 1
    wa, sa, ca, size_a = _stream(symbols[a], indexes[a], tables)
    wb, sb, cb, size_b = _stream(symbols[b], indexes[b], tables)
    out = np.empty(symbols.size, np.int64)
    out_a = np.empty(int(a.sum()), np.int64)
    out_b = np.empty(int(b.sum()), np.int64)

    def run_one():
        return one_chain(words, state.copy(), counts, layout.cdf, layout.sizes, out)

    def run_two():
        return two_chains(wa, sa.copy(), wb, sb.copy(), ca, cb, layout.cdf, layout.sizes,
                          out_a, out_b)

    if run_one() != symbols.size or run_two() != symbols.size:
        raise RuntimeError("a stream decoded short")
    if not (np.array_equal(out, grouped(symbols, indexes, tables))
            and np.array_equal(out_a, grouped(symbols[a], indexes[a], tables))
            and np.array_equal(out_b, grouped(symbols[b], indexes[b], tables))):
        raise RuntimeError("the decoded symbols differ from the encoder's")
    times = {}
    for name, fn in (("one", run_one), ("two", run_two)):
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        times[name] = best
    return {"symbols": int(symbols.size), "one_s": times["one"], "two_s": times["two"],
            "one_bytes": size1, "two_bytes": size_a + size_b, "split": (size_a, size_b)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data" / "val")
    p.add_argument("--size", default="1920x1080", help="WxH the first photo is resized to")
    p.add_argument("--quality", type=float, default=4)
    p.add_argument("--model", default="mse")
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args(argv)
    from PIL import Image

    w, h = (int(v) for v in args.size.split("x"))
    photo = sorted(args.data.glob("*.png"))[0]
    image = np.asarray(Image.open(photo).convert("RGB").resize((w, h), Image.LANCZOS))
    symbols, indexes, tables = capture_y(image, args.quality, args.model)
    r = measure(symbols, indexes, tables, args.repeat)
    n = r["symbols"]
    print(f"{photo.name} at {w}x{h}, quality {args.quality}, model {args.model}: {n} y symbols")
    print(f"one stream:  {r['one_s'] * 1e3:7.2f} ms  {r['one_s'] / n * 1e9:5.1f} ns/symbol  "
          f"{r['one_bytes']} bytes")
    print(f"two streams: {r['two_s'] * 1e3:7.2f} ms  {r['two_s'] / n * 1e9:5.1f} ns/symbol  "
          f"{r['two_bytes']} bytes ({r['split'][0]} + {r['split'][1]})")
    print(f"two against one: {r['one_s'] / r['two_s']:.2f}x faster, "
          f"{r['two_bytes'] - r['one_bytes']:+d} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
