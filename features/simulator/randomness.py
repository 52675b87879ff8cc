"""Counter-based random numbers: a hash of (seed, stream, keys) instead of a stateful generator.

Why not rand(seed)/randn(seed): their values depend on how rows are spread over partitions, and
they are not allowed inside higher-order functions. A hash of the row's own coordinates (user,
day, slot) gives the same number wherever and however often the row is computed, so events and
ground truth can draw the *same* numbers independently, and output is identical for a seed on
any cluster layout.
"""
from __future__ import annotations

import math

from pyspark.sql import Column
from pyspark.sql import functions as F

_TWO_POW_MINUS_53 = 2.0 ** -53


def hash64(seed: int, stream: str, *keys: Column | str | int) -> Column:
    """xxhash64(seed, stream, keys): 64 random bits, see `split_uniform`."""
    parts = [F.lit(seed), F.lit(stream)] + [k if isinstance(k, Column) else F.lit(k) for k in keys]
    return F.xxhash64(*parts)


def hex_id(seed: int, stream: str, *keys: Column | str | int, words: int = 2) -> Column:
    """An identifier of `16 * words` hex digits from `words` hashes of (seed, stream, keys).

    Replaces md5 of the keys' text: Spark's md5 looks up a MessageDigest by reflection for every
    row and formats the numbers as text first: about 15% of the warm simulation's samples.
    Two words (128 bits) keep ids distinct at any scale the simulator reaches (a collision of
    event ids would make ingest drop a real event as a duplicate)."""
    return F.concat(*[F.lpad(F.hex(hash64(seed, f"{stream}#{w}", *keys)), 16, "0") for w in range(words)])


def uniform(seed: int, stream: str, *keys: Column | str | int) -> Column:
    """U[0, 1) from the top 53 bits of xxhash64(seed, stream, keys)."""
    return split_uniform(hash64(seed, stream, *keys), 0, 1)


def split_bits(h: Column, index: int, parts: int) -> Column:
    """The `index`-th of `parts` (2 or 3) fields of 64 // parts bits in the 64-bit hash `h`,
    as a non-negative integer (see `split_uniform`)."""
    if not 0 <= index < parts or not 2 <= parts <= 3:
        raise ValueError(f"split: index {index} of {parts} parts (1 to 3 for a uniform, 2 or 3 for bits)")
    bits = 64 // parts
    return F.shiftrightunsigned(h, 64 - bits * (index + 1)).bitwiseAND(F.lit((1 << bits) - 1))


def split_uniform(h: Column, index: int, parts: int) -> Column:
    """The `index`-th of `parts` independent U[0, 1) held in the bits of one 64-bit hash `h`.

    Hashing is most of the simulator's cost: one hash gives 1 uniform of 53 bits, 2 of 32 bits
    or 3 of 21 bits (resolution 5e-7, fine for every probability and count drawn here). `h`
    should be a column materialised once (withColumn), not an expression repeated per use.
    """
    if parts == 1:
        return F.shiftrightunsigned(h, 11).cast("double") * F.lit(_TWO_POW_MINUS_53)
    return split_bits(h, index, parts).cast("double") * F.lit(2.0 ** -(64 // parts))


def normal(seed: int, stream: str, *keys: Column | str | int) -> Column:
    """N(0, 1) by Box-Muller from two independent uniforms."""
    u1 = uniform(seed, f"{stream}#1", *keys)
    u2 = uniform(seed, f"{stream}#2", *keys)
    return F.sqrt(F.lit(-2.0) * F.log(F.lit(1.0) - u1)) * F.cos(F.lit(2 * math.pi) * u2)


def sigmoid(x: Column) -> Column:
    return F.lit(1.0) / (F.lit(1.0) + F.exp(-x))


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def pick_index(cdf: Column, u: Column, size: int) -> Column:
    """0-based index i of the first cdf[i] > u: a draw from the categorical distribution `cdf`
    (non-decreasing, `size` entries).

    Counted as the number of cdf values <= u, which is the same index for a non-decreasing cdf:
    plain comparisons compile into Spark's generated code, where a higher-order function
    (transform + array_position) would be interpreted row by row.
    """
    below = sum((F.element_at(cdf, i + 1) <= u).cast("int") for i in range(size))
    # Rounding can leave the last cdf value a hair below 1: then the last index.
    return F.least(below, F.lit(size - 1)).cast("int")


# Bits of a draw from split_bits(h, i, 3), the draws `packed_cdf` serves.
PACKED_CDF_BITS = 64 // 3
PACKED_CDF_SLOTS = 3


def packed_cdf(cdf: list[Column]) -> list[Column]:
    """The categorical distribution `cdf` (non-decreasing doubles, one per value), packed into
    few longs for `pick_index_packed`: the same draws as `pick_index(cdf, split_uniform(h, i, 3))`.

    Why: a distribution per user (category preferences) is broadcast to every generating task,
    where twelve doubles a user ran the driver out of memory at millions of users. A draw of
    21 bits u = f / 2^21 has cdf[i] <= u exactly when t_i = ceil(cdf[i] * 2^21) - 1 < f, and
    t_i fits 21 bits (clamped at 2^21 - 1, which no f exceeds), so three thresholds share a long
    with no loss. The last value is never compared: pick_index's answer is at most size - 1.
    """
    scale, top = F.lit(float(2 ** PACKED_CDF_BITS)), F.lit(2 ** PACKED_CDF_BITS - 1)
    thresholds = [F.least(F.ceil(c * scale) - F.lit(1), top) for c in cdf[:-1]]
    words = []
    for start in range(0, len(thresholds), PACKED_CDF_SLOTS):
        word = F.lit(0).cast("long")
        for slot, t in enumerate(thresholds[start:start + PACKED_CDF_SLOTS]):
            word = word.bitwiseOR(F.shiftleft(t, PACKED_CDF_BITS * slot))
        words.append(word)
    return words


def packed_cdf_words(size: int) -> int:
    """How many longs `packed_cdf` packs a distribution of `size` values into."""
    return -(-(size - 1) // PACKED_CDF_SLOTS)


def pick_index_packed(words: list[Column], f: Column, size: int) -> Column:
    """0-based index drawn from a `size`-value distribution packed by `packed_cdf`, with the
    draw f = split_bits(h, i, 3): the number of thresholds below f."""
    mask = F.lit(2 ** PACKED_CDF_BITS - 1)
    below = [F.shiftright(words[i // PACKED_CDF_SLOTS], PACKED_CDF_BITS * (i % PACKED_CDF_SLOTS)).bitwiseAND(mask) < f
             for i in range(size - 1)]
    return sum((b.cast("int") for b in below), F.lit(0))


def pick_from(values: list[str], weights: list[float], u: Column) -> Column:
    """A draw from a small fixed list of values with the given weights."""
    total = sum(weights)
    cumulative, acc = [], 0.0
    for w in weights:
        acc += w / total
        cumulative.append(acc)
    expr = F.lit(values[-1])
    for value, upper in reversed(list(zip(values[:-1], cumulative[:-1]))):
        expr = F.when(u < F.lit(upper), F.lit(value)).otherwise(expr)
    return expr
