"""The per-user sums a snapshot's features divide, computed with numpy over user_daily's rows as
Arrow tables: every additive column summed over every window, the all-history extremes and last
device (what features.assemble.window_totals computes in Spark) and the category affinity sums
(features.families.category_affinity.category_affinity_aggregates).

In Spark these are aggregations with a hundred-odd conditional sums whose generated code the JIT
spends more CPU compiling than the rows cost (bench/RESULTS.md, session 16); here they are a few
vectorised passes per event date. A caller hands over the user_daily rows of one range of users
(features.assemble.snapshot_aggregates_from_files), date by date, so every user's rows meet in
one place without a shuffle.
"""
from __future__ import annotations

import datetime as dt
from typing import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.daily import ADDITIVE_COLUMNS, EXACT_SUM_COLUMNS, MICROS
from features.day_aggregates import CATEGORY_STRUCT, NO_TIME, micros, run_starts
from features.families.common import total_name

FIRST_TIMES = ("first_event_time",)
LAST_TIMES = ("last_event_time", "last_view_time", "last_cart_time", "last_purchase_time")
UTC_MICROS = pa.timestamp("us", tz="UTC")
USER_KEY = pa.schema([("user_key", pa.string())])
NO_LATER_TIME = np.iinfo(np.int64).max


def aggregates_schema(windows: Sequence[int], top_k: int) -> pa.Schema:
    """Columns and types as the Spark aggregations produce them (sums of ints are longs)."""
    sums = [(total_name(c, w), pa.float64() if c in EXACT_SUM_COLUMNS else pa.int64())
            for c in ADDITIVE_COLUMNS for w in windows]
    return pa.schema([
        ("user_key", pa.string()), ("snapshot_date", pa.date32()), *sums,
        *[(c, UTC_MICROS) for c in (*FIRST_TIMES, *LAST_TIMES)], ("last_device", pa.string()),
        *[(f"cat__top_{i}", pa.string()) for i in range(1, top_k + 1)],
        *[(f"cat__{c}", pa.int64()) for c in ("views_top", "purchases_top", "views", "purchases")],
        ("cat__distinct_viewed", pa.int32()), ("cat__distinct_bought", pa.int32()),
        ("cat__sum_vlogv", pa.float64()),
    ])


def user_daily_columns(with_categories: bool) -> pa.Schema:
    """The user_daily columns snapshot_aggregates sums (user_key aside), as Spark reads them."""
    return pa.schema([
        *[(c, pa.float64() if c in EXACT_SUM_COLUMNS else pa.int32()) for c in ADDITIVE_COLUMNS],
        *[(c, UTC_MICROS) for c in (*FIRST_TIMES, *LAST_TIMES)], ("last_device", pa.string()),
        *([("categories", pa.list_(CATEGORY_STRUCT))] if with_categories else []),
    ])


def user_key_ranges(keys: pa.Array, ranges: int) -> list[tuple[str | None, str | None]]:
    """Up to `ranges` ranges [low, high) of user_key (None: open), cut at quantiles of `keys`
    (a sample); together they hold every key, null included."""
    ordered = sorted(set(keys.drop_null().to_pylist()))
    cuts = sorted({ordered[len(ordered) * i // ranges] for i in range(1, ranges)} if ordered else set())
    bounds = [None, *cuts, None]
    return list(zip(bounds[:-1], bounds[1:]))


# The users dimension's columns a feature row carries, as the users table holds them, and the
# names the rows carry them under; IN_USERS is true on rows that found their user (the left join
# features.assemble.user_features makes in Spark when the workers do not).
USERS_COLUMNS = pa.schema([("user_key", pa.string()), ("signup_date", pa.date32()),
                           ("region", pa.string()), ("age_band", pa.string())])
USER_ATTRIBUTE_NAMES = {"signup_date": "signup_date", "region": "user_region", "age_band": "user_age_band"}
IN_USERS = "_in_users"


def user_attributes_schema() -> pa.Schema:
    return pa.schema([*[(USER_ATTRIBUTE_NAMES[f.name], f.type) for f in USERS_COLUMNS if f.name != "user_key"],
                      (IN_USERS, pa.bool_())])


def with_user_attributes(sums: pa.Table, users: pa.Table) -> pa.Table:
    """`sums` left-joined on user_key with the users dimension's rows `users` (USERS_COLUMNS),
    its columns renamed and IN_USERS added (user_attributes_schema). As a SQL left join: a key
    with several users rows gets a row for each, a null key matches none."""
    keys = users["user_key"]
    wanted = users.filter(pc.and_(pc.is_valid(keys), pc.is_in(keys, value_set=sums["user_key"].drop_null())))
    dims = pa.table({"user_key": wanted["user_key"],
                     **{USER_ATTRIBUTE_NAMES[c]: wanted[c] for c in USER_ATTRIBUTE_NAMES},
                     IN_USERS: pa.array(np.ones(wanted.num_rows, dtype=bool))})
    joined = sums.join(dims, "user_key", join_type="left outer")
    return joined.select([*sums.column_names, *user_attributes_schema().names])


LABEL_COLUMNS = pa.schema([("purchases", pa.int32()), ("spend", pa.float64()),
                           ("categories", pa.list_(CATEGORY_STRUCT))])
LABEL_SUMS_SCHEMA = pa.schema([("user_key", pa.string()), ("snapshot_date", pa.date32()),
                               ("spend", pa.float64()), ("n_purchases", pa.int64()),
                               ("category_spend", pa.map_(pa.string(), pa.float64()))])


def key_range_positions(keys: pa.Array, low: str | None, high: str | None) -> pa.Array:
    """Positions of the `keys` in [low, high); a null key belongs to the range open below."""
    mask = pc.is_valid(keys) if low is None else pc.greater_equal(keys, low)
    if high is not None:
        mask = pc.and_kleene(mask, pc.less(keys, high))
    if low is None:
        mask = pc.or_kleene(mask, pc.is_null(keys))
    return pc.indices_nonzero(pc.fill_null(mask, False))


def _numbers(column: pa.ChunkedArray | pa.Array, fill, dtype) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.fill_null(fill).to_numpy(zero_copy_only=False).astype(dtype)


def _times(column: pa.ChunkedArray, fill: int) -> np.ndarray:
    """Unix microseconds, `fill` for null."""
    return _numbers(pc.cast(column, UTC_MICROS, safe=False).cast(pa.int64()), fill, np.int64)


def _codes(column: pa.ChunkedArray | pa.Array, code_of: dict, what: str | None = None) -> np.ndarray:
    """Per row, the code `code_of` gives its value (null included). With `what`, a value outside
    `code_of` is an error naming it; without, a new value gets the next code (code_of grows)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    encoded = pc.dictionary_encode(array, null_encoding="encode")
    names = encoded.dictionary.to_pylist()
    unknown = sorted(str(n) for n in names if n not in code_of) if what else []
    if unknown:
        raise ValueError(f"{what} {unknown} are not among the {what} given")
    lut = np.array([code_of.setdefault(n, len(code_of)) for n in names], dtype=np.int64)
    return lut[_numbers(encoded.indices, 0, np.int64)] if len(lut) else np.zeros(len(array), np.int64)


def are_distinct(rows: np.ndarray, size: int) -> bool:
    """Whether no value of `rows` (positions below `size`) repeats."""
    return not len(rows) or np.bincount(rows, minlength=size).max() <= 1


def scatter_into(rows: np.ndarray, distinct_rows: bool) -> Callable[[np.ufunc, np.ndarray, np.ndarray], None]:
    """A function (op, target, values) that folds each values[i] into target[rows[i]] with the
    ufunc `op`, as op.at(target, rows, values) does. A date's user_daily rows hold each user
    once (`distinct_rows`, see are_distinct), and then plain indexing is used: ufunc.at is
    several times slower (about 3x for the 2-D sums, numpy 1.26). With repeats, ufunc.at."""
    if distinct_rows:
        def distinct(op: np.ufunc, target: np.ndarray, values: np.ndarray) -> None:
            target[rows] = op(target[rows], values)
        return distinct

    def repeated(op: np.ufunc, target: np.ndarray, values: np.ndarray) -> None:
        op.at(target, rows, values)
    return repeated


class SnapshotAccumulator:
    """Running per-user sums for one snapshot over user_daily rows fed a date at a time; the
    users are known up front (`user_keys`, distinct), so a row's user is an index, not a lookup."""

    def __init__(self, snapshot: dt.date, windows: Sequence[int], profile_window: int,
                 user_keys: pa.Array):
        self.snapshot, self.windows, self.profile_window = snapshot, sorted(windows), profile_window
        # Devices get codes as they come (0: null); ties compare their names (device_ranks).
        self.device_code: dict = {None: 0}
        self.user_keys = user_keys
        n = len(user_keys)
        self.categories: dict = {}
        # Bucket i holds the days with windows[i-1] < age <= windows[i]: a window's total is the
        # sum of its bucket and the smaller ones.
        self.sums = np.zeros((len(self.windows), n, len(ADDITIVE_COLUMNS)), dtype=np.int64)
        self.first = np.full(n, NO_LATER_TIME)
        self.last = np.full((n, len(LAST_TIMES)), NO_TIME)
        self.last_device = np.zeros(n, dtype=np.int64)  # a code of device_code
        self.entries: list[tuple[np.ndarray, ...]] = []

    def add_day(self, event_date: dt.date, rows: np.ndarray, day: pa.Table) -> None:
        """Adds the user_daily rows of `event_date` (a date before the snapshot): `rows` holds
        each row's user (its position in user_keys)."""
        age = (self.snapshot - event_date).days
        if age < 1:
            raise ValueError(f"user_daily date {event_date} is not before snapshot {self.snapshot}")
        bucket = next((i for i, w in enumerate(self.windows) if age <= w), None)
        distinct = are_distinct(rows, len(self.user_keys))
        scatter = scatter_into(rows, distinct)
        if bucket is not None:
            values = np.column_stack([
                _numbers(micros(day[c]) if c in EXACT_SUM_COLUMNS else day[c], 0, np.int64)
                for c in ADDITIVE_COLUMNS])
            scatter(np.add, self.sums[bucket], values)
        scatter(np.minimum, self.first, _times(day["first_event_time"], NO_LATER_TIME))
        last = np.column_stack([_times(day[c], NO_TIME) for c in LAST_TIMES])
        self._fold_last_device(rows, last[:, 0], _codes(day["last_device"], self.device_code), distinct)
        scatter(np.maximum, self.last, last)
        if age <= self.profile_window:
            self._add_categories(rows, day["categories"])

    def device_ranks(self) -> np.ndarray:
        """Per device code, its rank among the devices seen, in byte order of the names (as Spark
        compares strings), null lowest."""
        names = list(self.device_code)
        order = sorted(range(len(names)), key=lambda c: (names[c] is not None, names[c] or ""))
        rank = np.empty(len(names), dtype=np.int64)
        rank[order] = np.arange(len(names))
        return rank

    def _fold_last_device(self, rows: np.ndarray, time: np.ndarray, device: np.ndarray,
                          distinct: bool) -> None:
        """The user's device at its latest last_event_time so far, the larger name at equal
        times (features.daily.packed_time_device in Spark). Call before self.last takes `time`."""
        rank = self.device_ranks()
        if not distinct:  # one row per user first: its latest (time, device name)
            order = np.lexsort((rank[device], time, rows))
            ends = np.append(run_starts(rows[order])[1:], len(rows)) - 1
            rows, time, device = rows[order][ends], time[order][ends], device[order][ends]
        current = self.last[rows, 0]
        later = (time > current) | ((time == current) & (time != NO_TIME)
                                    & (rank[device] > rank[self.last_device[rows]]))
        self.last_device[rows[later]] = device[later]

    def _add_categories(self, rows: np.ndarray, categories: pa.ChunkedArray) -> None:
        user, code, entries = category_entries(categories.combine_chunks(), rows, self.categories)
        self.entries.append((user, code, _numbers(entries.field("views"), 0, np.int64),
                             _numbers(entries.field("purchases"), 0, np.int64)))

    def result(self, top_k: int) -> pa.Table:
        n = len(self.user_keys)
        totals = np.cumsum(self.sums, axis=0, out=self.sums)  # in place: the sums are the most memory
        columns: dict = {"user_key": self.user_keys,
                         "snapshot_date": pa.array([self.snapshot] * n, pa.date32())}
        for j, c in enumerate(ADDITIVE_COLUMNS):
            for i, w in enumerate(self.windows):
                column = totals[i, :, j]
                columns[total_name(c, w)] = pa.array(column / MICROS if c in EXACT_SUM_COLUMNS else column)
        columns["first_event_time"] = _as_times(self.first, NO_LATER_TIME)
        for j, c in enumerate(LAST_TIMES):
            columns[c] = _as_times(self.last[:, j], NO_TIME)
        columns["last_device"] = pa.array(list(self.device_code), pa.string()).take(pa.array(self.last_device))
        columns.update(self._category_columns(n, top_k))
        return pa.table(columns)

    def _category_columns(self, n: int, top_k: int) -> dict:
        """As category_affinity_aggregates: per user, the (category, views, purchases) totals of
        the profile window with any view or purchase, ranked by views desc, purchases desc, id."""
        if not self.entries:
            return _no_category_columns(n, top_k)
        user, code, views, purchases = sums_per_user_and_category(*self.entries)
        kept = (views > 0) | (purchases > 0)
        user, code, views, purchases = user[kept], code[kept], views[kept], purchases[kept]
        names, rank = name_ranks(self.categories)
        ranked = np.lexsort((rank[code], -purchases, -views, user))
        user, code, views, purchases = user[ranked], code[ranked], views[ranked], purchases[ranked]
        first = run_starts(user)
        position = np.arange(len(user)) - np.repeat(first, np.diff(np.r_[first, len(user)]))
        has_any = np.zeros(n, dtype=bool)
        has_any[user] = True
        missing = ~has_any

        def per_user(values: np.ndarray, where: np.ndarray, dtype) -> pa.Array:
            out = np.zeros(n, dtype=dtype)
            np.add.at(out, user[where], values[where].astype(dtype))
            return pa.array(out, mask=missing)

        everywhere = np.ones(len(user), dtype=bool)
        top = position < top_k
        columns = {}
        for i in range(1, top_k + 1):
            at = position == i - 1
            ids = np.full(n, None, dtype=object)
            ids[user[at]] = names[code[at]]
            columns[f"cat__top_{i}"] = pa.array(ids, pa.string())
        weights = views.astype(np.float64)
        # Added one by one in rank order from 0.0, as Spark's aggregate() over the sorted list.
        vlogv = np.where(views > 0, weights * np.log(np.where(views > 0, weights, 1.0)), 0.0)
        columns.update({
            "cat__views_top": per_user(views, top, np.int64),
            "cat__purchases_top": per_user(purchases, top, np.int64),
            "cat__views": per_user(views, everywhere, np.int64),
            "cat__purchases": per_user(purchases, everywhere, np.int64),
            "cat__distinct_viewed": per_user((views > 0).astype(np.int32), everywhere, np.int32),
            "cat__distinct_bought": per_user((purchases > 0).astype(np.int32), everywhere, np.int32),
            "cat__sum_vlogv": per_user(vlogv, everywhere, np.float64),
        })
        return columns


def _no_category_columns(n: int, top_k: int) -> dict:
    schema = aggregates_schema((), top_k)
    return {f.name: pa.nulls(n, f.type) for f in schema if f.name.startswith("cat__")}


def _as_times(values: np.ndarray, none: int) -> pa.Array:
    return pa.array(values, pa.int64(), mask=values == none).cast(UTC_MICROS)


def snapshot_aggregates(dates: Sequence[dt.date], keys: Callable[[dt.date], pa.Array],
                        columns: Callable[[dt.date, pa.Schema], pa.Table], snapshot: dt.date,
                        windows: Sequence[int], profile_window: int, top_k: int) -> pa.Table:
    """One row per user_key of some user_daily rows (any subset of users, `dates` before
    `snapshot`) with the columns of aggregates_schema. `keys(d)` gives the user_key of date d's
    rows, `columns(d, schema)` the schema's columns of the same rows in the same order: the keys
    are read first, so that every user's index is known before any sum."""
    user_keys, days = rows_by_day(dates, keys, columns,
                                  lambda d: user_daily_columns((snapshot - d).days <= profile_window))
    accumulator = SnapshotAccumulator(snapshot, windows, profile_window, user_keys)
    for d, rows, day in days:
        accumulator.add_day(d, rows, day)
    return accumulator.result(top_k).cast(aggregates_schema(windows, top_k))


def label_sums(dates: Sequence[dt.date], keys: Callable[[dt.date], pa.Array],
               columns: Callable[[dt.date, pa.Schema], pa.Table], snapshot: dt.date) -> pa.Table:
    """As features.labels.label_sums: one row per user_key with a purchase on `dates` (the label
    window of `snapshot`; keys and columns as in snapshot_aggregates) with the spend, the
    purchases and the spend per category (a map sorted by category id) of those dates."""
    user_keys, days = rows_by_day(dates, keys, columns, lambda d: LABEL_COLUMNS)
    spend = np.zeros(len(user_keys), dtype=np.int64)
    purchases = np.zeros(len(user_keys), dtype=np.int64)
    categories: dict = {}
    entries = []
    for _, rows, day in days:
        bought = _numbers(day["purchases"], 0, np.int64)
        kept = np.flatnonzero(bought > 0)
        np.add.at(purchases, rows[kept], bought[kept])
        np.add.at(spend, rows[kept], _numbers(micros(day["spend"]), 0, np.int64)[kept])
        user, code, entry = category_entries(day["categories"].combine_chunks().take(kept),
                                             rows[kept], categories)
        bought_in = _numbers(entry.field("purchases"), 0, np.int64) > 0
        entries.append((user[bought_in], code[bought_in],
                        _numbers(micros(entry.field("spend")), 0, np.int64)[bought_in]))
    buyers = np.flatnonzero(purchases > 0)
    position = np.full(len(user_keys), -1)
    position[buyers] = np.arange(len(buyers))
    user, code, category_spend = sums_per_user_and_category(*entries, (np.zeros(0, np.int64),) * 3)
    names, rank = name_ranks(categories)
    order = np.lexsort((rank[code], user)) if len(user) else user
    user, code, category_spend = position[user[order]], code[order], category_spend[order]
    offsets = np.zeros(len(buyers) + 1, dtype=np.int32)
    np.cumsum(np.bincount(user, minlength=len(buyers)), out=offsets[1:])
    return pa.table({
        "user_key": user_keys.take(pa.array(buyers)),
        "snapshot_date": pa.array([snapshot] * len(buyers), pa.date32()),
        "spend": pa.array(spend[buyers] / MICROS),
        "n_purchases": pa.array(purchases[buyers]),
        "category_spend": pa.MapArray.from_arrays(pa.array(offsets), pa.array(names[code], pa.string()),
                                                  pa.array(category_spend / MICROS)),
    }).cast(LABEL_SUMS_SCHEMA)


# Per event date, all users' sums that a snapshot's population-wide features divide: the funnel
# counts (is_total, category_id null) and each category's views and purchases (is_total false).
POPULATION_SCHEMA = pa.schema([("event_date", pa.date32()), ("is_total", pa.bool_()),
                               ("category_id", pa.string()), ("views", pa.int64()),
                               ("carts", pa.int64()), ("purchases", pa.int64())])
POPULATION_COLUMNS = pa.schema([("user_key", pa.string()), ("views", pa.int32()), ("carts", pa.int32()),
                                ("purchases", pa.int32()), ("categories", pa.list_(CATEGORY_STRUCT))])


def population_sums(event_date: dt.date, day: pa.Table, with_categories: bool) -> pa.Table:
    """POPULATION_SCHEMA rows of one date's user_daily rows (`day`, POPULATION_COLUMNS): the
    date's views, carts and purchases, and with_categories each category's views and purchases
    over the rows with a user_key (as features.families.category_affinity.categories_in_profile_window)."""
    totals = {c: pc.sum(day[c]).as_py() or 0 for c in ("views", "carts", "purchases")}
    rows = {"event_date": [event_date], "is_total": [True], "category_id": [None],
            "views": [totals["views"]], "carts": [totals["carts"]], "purchases": [totals["purchases"]]}
    if with_categories:
        keyed = day.filter(pc.is_valid(day["user_key"]))
        entries = pc.list_flatten(keyed["categories"].combine_chunks())
        per_category = (pa.table({"category_id": entries.field("category_id"),
                                  "views": entries.field("views"), "purchases": entries.field("purchases")})
                        .group_by("category_id").aggregate([("views", "sum"), ("purchases", "sum")]))
        n = per_category.num_rows
        rows["event_date"] += [event_date] * n
        rows["is_total"] += [False] * n
        rows["category_id"] += per_category["category_id"].to_pylist()
        rows["views"] += per_category["views_sum"].to_pylist()
        rows["carts"] += [None] * n
        rows["purchases"] += per_category["purchases_sum"].to_pylist()
    return pa.table(rows, POPULATION_SCHEMA)


def rows_by_day(dates: Sequence[dt.date], keys: Callable[[dt.date], pa.Array],
                columns: Callable[[dt.date, pa.Schema], pa.Table],
                schema_of: Callable[[dt.date], pa.Schema]) -> tuple[pa.Array, Iterator]:
    """(the distinct user keys of `dates`, an iterator of (date, each row's user as a position in
    those keys, the date's `schema_of(date)` columns)). The keys are read first, so that every
    user's position is known before any sum."""
    # One hash table over all the keys, without concatenating them (a range's keys of a year of
    # dates are most of a task's memory until they become positions).
    all_keys = pa.chunked_array([keys(d) for d in dates], pa.string())
    distinct = pc.unique(all_keys)
    positions = pc.index_in(all_keys, value_set=distinct)
    users = np.split(np.concatenate([_numbers(c, 0, np.int64) for c in positions.chunks]
                                    or [np.zeros(0, np.int64)]),
                     np.cumsum([len(c) for c in all_keys.chunks])[:-1])
    del all_keys, positions

    def days():
        for d, rows in zip(dates, users):
            yield d, rows, columns(d, schema_of(d))

    return distinct, days()


def category_entries(lists: pa.ListArray, rows: np.ndarray, code_of: dict
                     ) -> tuple[np.ndarray, np.ndarray, pa.StructArray]:
    """(the user of each entry of the category lists, its category as a code of `code_of`, which
    grows with new ids, the entries themselves) for lists whose rows belong to users `rows`."""
    parents = _numbers(pc.list_parent_indices(lists), 0, np.int64)
    entries = pc.list_flatten(lists)
    return rows[parents], _codes(entries.field("category_id"), code_of), entries


def sums_per_user_and_category(*parts: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """(user, category code, *values) per distinct (user, code) of the concatenated `parts`,
    each value summed, sorted by user and code."""
    user, code, *values = (np.concatenate(column) for column in zip(*parts))
    # One int64 key sorts as (user, code) and sorts several times faster than np.lexsort of
    # the two; the sums do not depend on the order of equal keys.
    key = user * (int(code.max()) + 1 if len(code) else 1) + code
    order = np.argsort(key)
    key = key[order]
    starts = run_starts(key)
    return (user[order][starts], code[order][starts], *[np.add.reduceat(v[order], starts) for v in values])


def name_ranks(code_of: dict) -> tuple[np.ndarray, np.ndarray]:
    """(the names by code, each code's rank in the names' byte order, as Spark sorts strings)."""
    names = np.array(list(code_of), dtype=object)
    rank = np.empty(len(names), dtype=np.int64)
    rank[np.argsort(names, kind="stable")] = np.arange(len(names))
    return names, rank
