"""The user_daily rows of one event date, computed with numpy over the date's events as an Arrow
table (see features.daily: each date goes whole to a Python worker).

Every aggregate is a count or an integer sum per user (np.bincount), or a min or max over the
user's events after one sort by (user, session): a few vectorised passes over the date's events
instead of Spark's row-at-a-time hash aggregation. Amounts arrive as integer millionths, so
sums are exact and independent of row order. Output rows come in order of the users' first
events.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.daily import (CATEGORY_FIELDS, DAILY_ADDITIVE_ORDER, DAY_PARTS, EXACT_SUM_COLUMNS,
                            MICROS, ROLE_CART, ROLE_PURCHASE, ROLE_VIEW)

CATEGORY_STRUCT = pa.struct([("category_id", pa.string()), ("views", pa.int32()),
                             ("purchases", pa.int32()), ("spend", pa.float64())])
assert [f.name for f in CATEGORY_STRUCT] == [f.split()[0] for f in CATEGORY_FIELDS.split(", ")]
NO_TIME = np.iinfo(np.int64).min


def ranks(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """(per row: the rank of its value among the column's sorted distinct values, -1 for null;
    those sorted distinct values). Ranks sort as the values do (byte order for strings)."""
    encoded = pc.dictionary_encode(column.combine_chunks())
    order = pc.sort_indices(encoded.dictionary).to_numpy()
    rank_of_code = np.empty(len(order), dtype=np.int64)
    rank_of_code[order] = np.arange(len(order))
    indices = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    if not len(order):  # every value null
        return indices, encoded.dictionary
    return (np.where(indices >= 0, rank_of_code[np.maximum(indices, 0)], -1),
            encoded.dictionary.take(pa.array(order, pa.int64())))


def codes(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """(per row: the code of its value, those values by code, in order of first appearance);
    null is a value of its own."""
    encoded = pc.dictionary_encode(column.combine_chunks(), null_encoding="encode")
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary


def _values(table: pa.Table, name: str, fill, dtype) -> np.ndarray:
    return table[name].combine_chunks().fill_null(fill).to_numpy(zero_copy_only=False).astype(dtype)


def run_starts(*sorted_keys: np.ndarray) -> np.ndarray:
    """Index of the first row of each run of equal key tuples (rows sorted by the keys)."""
    change = np.zeros(len(sorted_keys[0]), dtype=bool)
    change[:1] = True
    for key in sorted_keys:
        change[1:] |= key[1:] != key[:-1]
    return np.flatnonzero(change)


def user_aggregates_of_day(events: pa.Table) -> pa.Table:
    """One user_daily row per user_key of `events`, all of one event_date (the columns of
    compact_events)."""
    n = events.num_rows
    # Users in order of first appearance: with a day's events grouped by user, as files
    # usually hold them, the sort below then finds them in order. A null user_key is a group of
    # its own, as in a GROUP BY.
    user, user_keys = codes(events["user_key"])
    n_users = len(user_keys)
    time = events["event_time"].combine_chunks().cast(pa.int64()).to_numpy(zero_copy_only=False)
    role = _values(events, "role", 0, np.int8)
    view, cart, buy = role == ROLE_VIEW, role == ROLE_CART, role == ROLE_PURCHASE
    priced = events["price_micros"].combine_chunks().is_valid().to_numpy(zero_copy_only=False)
    price = _values(events, "price_micros", 0, np.int64)
    value = _values(events, "value_micros", 0, np.int64)
    hour = _values(events, "hour", -1, np.int16)

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(user[mask], minlength=n_users)

    def total(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
        # float64 weights: exact for integer sums below 2**53 (a day's amounts in millionths)
        return np.bincount(user[mask], weights=values[mask], minlength=n_users).astype(np.int64)

    sums = {
        "events": np.bincount(user, minlength=n_users), "views": count(view),
        "carts": count(cart), "purchases": count(buy),
        "viewed_value": total(view, value), "carted_value": total(cart, value),
        "spend": total(buy, value), "viewed_price_sum": total(view, price),
        "views_priced": count(view & priced), "bought_price_sum": total(buy, price),
        "purchases_priced": count(buy & priced),
        "purchased_quantity": total(buy, _values(events, "quantity", 0, np.int64)),
        "promo_purchases": count(buy & _values(events, "promo", False, bool)),
        "weekend_events": count(_values(events, "weekend", False, bool)),
        **{f"events_{part}": count((hour >= lo) & (hour < hi)) for part, (lo, hi) in DAY_PARTS.items()},
    }

    # One sort of the day's events, by (user, session): a user's events form one run, made of
    # its sessions' runs, and every time aggregate is a min or max over a run. (A lexsort by
    # time as well would order the rows within the runs, which none of them needs.) A null
    # session_id is a session of its own.
    session, _ = codes(events["session_id"])
    key = user * (int(session.max()) + 1 if n else 1) + session
    order = np.argsort(key, kind="stable")
    sorted_user, sorted_time = user[order], time[order]
    starts = run_starts(sorted_user)  # run i is user i: every code has rows
    first_time = np.minimum.reduceat(sorted_time, starts)
    last_time = np.maximum.reduceat(sorted_time, starts)

    def last_time_of(mask: np.ndarray) -> pa.Array:
        latest = np.maximum.reduceat(np.where(mask[order], sorted_time, NO_TIME), starts)
        return pa.array(latest, mask=latest == NO_TIME)

    # The last device: of the user's events at its last time, the largest device name (a null
    # device ranks lowest, -1).
    device, device_names = ranks(events["device"])
    at_last = sorted_time == last_time[sorted_user]
    last_device = np.maximum.reduceat(np.where(at_last, device[order], -2), starts)

    # Sessions of the day: count, and the summed length of their part on this day, so sessions
    # stay additive across days.
    s_starts = run_starts(key[order])
    s_length = np.maximum.reduceat(sorted_time, s_starts) - np.minimum.reduceat(sorted_time, s_starts)
    sessions = np.bincount(sorted_user[s_starts], minlength=n_users)
    session_micros = np.bincount(sorted_user[s_starts], weights=s_length, minlength=n_users).astype(np.int64)

    columns: dict[str, pa.Array] = {
        "user_key": user_keys,
        "event_date": events["event_date"].combine_chunks().take(np.zeros(n_users, dtype=np.int64)),
    }
    for name in DAILY_ADDITIVE_ORDER:
        if name in sums:
            columns[name] = (pa.array(sums[name] / MICROS) if name in EXACT_SUM_COLUMNS
                             else pa.array(sums[name].astype(np.int32)))
        elif name == "sessions":
            columns[name] = pa.array(sessions.astype(np.int32))
        elif name == "session_seconds":
            columns[name] = pa.array(session_micros / MICROS)
        elif name == "active_days":
            columns[name] = pa.array(np.ones(n_users, dtype=np.int32))
    time_type = events.schema.field("event_time").type
    columns.update({
        "first_event_time": pa.array(first_time).cast(time_type),
        "last_event_time": pa.array(last_time).cast(time_type),
        "last_view_time": last_time_of(view).cast(time_type),
        "last_cart_time": last_time_of(cart).cast(time_type),
        "last_purchase_time": last_time_of(buy).cast(time_type),
        "last_device": device_names.take(pa.array(last_device, mask=last_device < 0)),
        "categories": category_lists(events, user, n_users, view, buy, value),
    })
    return pa.table(columns)


def category_lists(events: pa.Table, user: np.ndarray, n_users: int, view: np.ndarray,
                   buy: np.ndarray, value: np.ndarray) -> pa.ListArray:
    """Per user (by code): views, purchases and spend per category_id, sorted by category_id;
    events without a category are left out (an empty list when none has one)."""
    category, names = ranks(events["category_id"])
    rows = np.flatnonzero(category >= 0)
    rows = rows[np.argsort(user[rows] * len(names) + category[rows], kind="stable")]
    c_user, c_category = user[rows], category[rows]
    if len(rows):
        starts = run_starts(c_user, c_category)
        views = np.add.reduceat(view[rows].astype(np.int32), starts)
        purchases = np.add.reduceat(buy[rows].astype(np.int32), starts)
        spend = np.add.reduceat(np.where(buy[rows], value[rows], 0), starts)
        ids = names.take(pa.array(c_category[starts]))
        per_user = np.bincount(c_user[starts], minlength=n_users)
    else:
        views = purchases = np.zeros(0, dtype=np.int32)
        spend, ids, per_user = np.zeros(0, dtype=np.int64), pa.array([], pa.string()), np.zeros(n_users, int)
    offsets = np.zeros(n_users + 1, dtype=np.int32)
    np.cumsum(per_user, out=offsets[1:])
    entries = pa.StructArray.from_arrays(
        [ids, pa.array(views, pa.int32()), pa.array(purchases, pa.int32()), pa.array(spend / MICROS)],
        fields=list(CATEGORY_STRUCT))
    return pa.ListArray.from_arrays(pa.array(offsets), entries)


# The event columns user_daily reads (besides event_date), as Spark reads them (session time
# zone UTC): the direct file reader conforms every file to these types.
RAW_EVENT_SCHEMA = pa.schema([
    ("user_key", pa.string()), ("session_id", pa.string()),
    ("event_time", pa.timestamp("us", tz="UTC")), ("event_type", pa.string()),
    ("item_id", pa.string()), ("category_id", pa.string()), ("price", pa.float64()),
    ("quantity", pa.int32()), ("device", pa.string()),
])
# What a user_daily row needs of an item: its category (for events without one) and list price.
ITEM_CONTEXT_SCHEMA = pa.schema([("item_id", pa.string()), ("category_id", pa.string()),
                                 ("list_price", pa.float64())])


def micros(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Integer millionths of doubles, rounded half away from zero like Spark's round(x * 1e6)
    (a BigDecimal HALF_UP): a double's fractional part is exact, so comparing it with 0.5 is."""
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    scaled = array.fill_null(0).to_numpy(zero_copy_only=False) * MICROS
    whole = np.trunc(scaled)
    fraction = scaled - whole
    rounded = whole + (fraction >= 0.5) - (fraction <= -0.5)
    return pa.array(rounded.astype(np.int64), mask=array.is_null().to_numpy(zero_copy_only=False))


def compact_events(raw: pa.Table, items: pa.Table, roles) -> pa.Table:
    """Events of RAW_EVENT_SCHEMA (and event_date) in the layout user_aggregates_of_day reads:
    the item's category when the event has none, the role as a code (`roles`: which event types
    are view, cart and purchase), the promotion flag (price below the item's list price), amounts
    in integer millionths, hour and weekend in UTC."""
    item = pc.index_in(raw["item_id"], value_set=items["item_id"])
    event_type = raw["event_type"]
    role = np.zeros(raw.num_rows, dtype=np.int8)
    for code, name in ((ROLE_VIEW, roles.view), (ROLE_CART, roles.cart), (ROLE_PURCHASE, roles.purchase)):
        role[pc.equal(event_type, name).combine_chunks().fill_null(False).to_numpy(zero_copy_only=False)] = code
    quantity = pc.coalesce(raw["quantity"], pa.scalar(1, pa.int32()))
    price = raw["price"]
    weekday = pc.day_of_week(raw["event_date"])  # Monday 0 .. Sunday 6
    return pa.table({
        "user_key": raw["user_key"], "event_date": raw["event_date"], "session_id": raw["session_id"],
        "event_time": raw["event_time"],
        "category_id": pc.coalesce(raw["category_id"], pc.take(items["category_id"], item)),
        "device": raw["device"], "quantity": quantity, "role": pa.array(role),
        "promo": pc.less(price, pc.take(items["list_price"], item)),
        "price_micros": micros(price),
        "value_micros": micros(pc.multiply(price, pc.cast(quantity, pa.float64()))),
        "hour": pc.cast(pc.hour(raw["event_time"]), pa.int8()),
        "weekend": pc.greater_equal(weekday, 5),
    })


def user_daily_rows(raw: pa.Table, items: pa.Table, roles) -> pa.Table:
    """user_daily rows of events of one event_date (RAW_EVENT_SCHEMA and event_date)."""
    return user_aggregates_of_day(compact_events(raw, items, roles))
