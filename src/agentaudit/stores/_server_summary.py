"""`stats` from pre-aggregated groups: the server stores' rollup, kept by every writer.

Why: `stats` over a million runs computed its totals and exact percentiles from every
matching run and its events when asked (seconds to tens of seconds). The rollup
holds, per (UTC day of the run's start, model, status) cell, the totals `stats`
shows and three mergeable histograms (run durations, steps' ``ms``, tool results'
``ms``), so a summary reads a few thousand cells instead of millions of rows.

- Cells hold finished runs only (any status but ``running``): a running run's row
  and events still change. `summary` reads running runs raw (the ``status`` index)
  and merges them in.
- Histograms are log buckets (as DDSketch): a value v > 0 falls in bucket
  ``k = ceil(log_GAMMA(v))``, i.e. (GAMMA^(k-1), GAMMA^k], shown as
  ``2 GAMMA^k / (GAMMA + 1)``, within ``ALPHA = (GAMMA - 1) / (GAMMA + 1)`` (0.99 %)
  of every value in the bucket; zero and negative values have buckets of their own.
  Merging is adding counts; a percentile interpolated between two neighbouring
  ranks (as the exact path does) is within ALPHA of the exact one.
- Buckets are always computed by the database, with one SQL expression: what a
  change adds and what a later change takes away fall in the same bucket.
- Maintenance is a difference: every path that changes runs or events reads the
  contribution of the runs it touches before and after the change, in the same
  transaction, and adds the difference to the cells (one multi-row upsert per
  table, keys in sorted order: concurrent writers lock cells in one order, so they
  cannot deadlock on them). Re-applying a write that had already landed adds
  nothing: before and after are equal.
- Dimensions: day, model and status, so ``--by day/model/status`` with
  ``--since/--until/--model/--status`` are served from the cells. Caller and name
  are left out on purpose: with them the cells outnumber what they summarise
  (500 callers x 5 names x 5 models x 90 days is 1.1M cells), and merging them would
  cost what the raw path costs. ``--by caller/name`` and every other filter take
  the exact path.
- Grains: each run is counted at three (`GRAIN_DAY`, `GRAIN_MONTH`,
  `GRAIN_DAY_ALL`), so that "all runs" reads whole months' cells and ``--by day``
  reads one cell per day, not one per day, model and status.
- The window's partial days (``--since 7d`` starts mid-day) and running runs are
  read raw by `ServerStore.summary`, bucketed by the same SQL, merged in SQL.
- Known gap: a run reaped while its process was only cut off, then given more
  events by that process's own writer (not through the forwarder's ingest), keeps
  its abandoned row's totals, as before this rollup; the rollup keeps the same
  view and does not count those late events' times.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._server_dialect import Dialect

__all__ = [
    "ALPHA",
    "GAMMA",
    "GRAIN_DAY",
    "GRAIN_DAY_ALL",
    "GRAIN_MONTH",
    "KINDS",
    "Rollup",
    "apply_rollup",
    "backfill_statements",
    "bucket_sql",
    "forget_runs",
    "keep_rollup",
    "percentiles",
    "rank_buckets_sql",
    "rank_days_sql",
    "read_rollup",
    "read_runs",
    "rebuild_statements",
]

GAMMA = 1.02
ALPHA = (GAMMA - 1) / (GAMMA + 1)
_LOG_GAMMA = repr(math.log(GAMMA))
# Bucket numbers grow with the values, so that SQL orders buckets by number:
# v > 0: its log bucket (within +-36,000 for any double); v == 0: ZERO_BUCKET;
# v < 0: NEGATIVE - the log bucket of -v (the larger -v, the smaller the number).
ZERO_BUCKET = -1_000_000
NEGATIVE = -1_100_000
FAILED = "'failed', 'timeout', 'abandoned'"  # as `stats` counts failures
KINDS = {"duration": 1, "step": 2, "tool": 3}  # which spread a bucket counts
TOTALS = (
    "runs",
    "failed",
    "input_tokens",
    "output_tokens",
    "thinking_tokens",
    "cost_usd",
    "priced",
    "tool_calls",
    "steps",
)
_CHUNK = 500

# Each run is counted at three grains, so that a long window reads few cells:
GRAIN_DAY = 0  # (its day, model, status)
GRAIN_MONTH = 1  # (the first day of its month, model, status): whole months
GRAIN_DAY_ALL = 2  # (its day, "", ""): `--by day` without a model or status filter
Cell = tuple[int, date, str, str]  # (grain, day, model, status)
Bucket = tuple[int, date, str, str, int, int]  # (grain, day, model, status, kind, bucket)


def bucket_sql(value: str, int_type: str) -> str:
    """The bucket of the double ``value`` (an SQL expression; NULL stays NULL)."""

    def log_bucket(positive: str) -> str:
        # clamped: ln of an infinite or subnormal value must not fail the statement
        return f"CAST(CEIL(LN(LEAST(GREATEST({positive}, 1e-300), 1e300)) / {_LOG_GAMMA}) AS {int_type})"

    return (
        f"(CASE WHEN {value} > 0 THEN {log_bucket(value)} "
        f"WHEN {value} < 0 THEN {NEGATIVE} - {log_bucket(f'-({value})')} "
        f"WHEN {value} = 0 THEN {ZERO_BUCKET} END)"
    )


def bucket_value(bucket: int) -> float:
    """What a bucket shows: the middle (in relative terms) of its range."""
    if bucket == ZERO_BUCKET:
        return 0.0
    if bucket < ZERO_BUCKET:
        return -bucket_value(NEGATIVE - bucket)
    return 2 * GAMMA**bucket / (GAMMA + 1)


def _contribution_sql(
    day: str, duration_ms: str, join: str, int_type: str, where: str
) -> tuple[str, str]:
    """(cells, buckets): what the finished runs of ``runs r`` matching ``where``
    (over ``r``) add to the rollup, as two SELECTs."""
    finished = f"r.status <> 'running' AND ({where})"
    cells = (
        f"SELECT {day} AS day, r.model AS model, r.status AS status, count(*) AS runs, "
        f"sum(CASE WHEN r.status IN ({FAILED}) THEN 1 ELSE 0 END) AS failed, "
        "coalesce(sum(r.input_tokens), 0) AS input_tokens, coalesce(sum(r.output_tokens), 0) AS output_tokens, "
        "coalesce(sum(r.thinking_tokens), 0) AS thinking_tokens, coalesce(sum(r.cost_usd), 0) AS cost_usd, "
        "count(r.cost_usd) AS priced, coalesce(sum(r.tool_calls), 0) AS tool_calls, "
        f"coalesce(sum(r.steps), 0) AS steps FROM runs r WHERE {finished} GROUP BY 1, 2, 3"
    )
    buckets = (
        "SELECT day, model, status, kind, bucket, count(*) AS n FROM ("
        f"SELECT {day} AS day, r.model AS model, r.status AS status, {KINDS['duration']} AS kind, "
        f"{bucket_sql(duration_ms, int_type)} AS bucket FROM runs r "
        f"WHERE {finished} AND r.finished_at IS NOT NULL "
        "UNION ALL "
        f"SELECT {day}, r.model, r.status, "
        f"CASE WHEN e.event_type = 'step' THEN {KINDS['step']} ELSE {KINDS['tool']} END, "
        f"{bucket_sql('e.ms', int_type)} FROM runs r JOIN events e ON {join} "
        f"WHERE {finished} AND e.event_type IN ('step', 'tool_result') AND e.ms IS NOT NULL"
        ") s GROUP BY day, model, status, kind, bucket"
    )
    return cells, buckets


def backfill_statements(
    day: str, duration_ms: str, join: str, int_type: str, month: str
) -> list[str]:
    """The rollup of every finished run held, from scratch (the migration that adds
    the rollup, and a bulk load that writes rows directly): the day grain from the
    runs, the others from it (``month``: the first day of a DATE column's month,
    with ``{column}``). The v6 migration is spelled with this and `bucket_sql`: a
    change to either is a new migration."""
    cells, buckets = _contribution_sql(day, duration_ms, join, int_type, "1 = 1")
    sums = ", ".join(f"sum({name})" for name in TOTALS)
    statements = [
        "DELETE FROM run_rollup",
        "DELETE FROM run_rollup_ms",
        f"INSERT INTO run_rollup (grain, day, model, status, {', '.join(TOTALS)}) "
        f"SELECT {GRAIN_DAY}, c.* FROM ({cells}) c",
        f"INSERT INTO run_rollup_ms (grain, day, model, status, kind, bucket, n) "
        f"SELECT {GRAIN_DAY}, b.* FROM ({buckets}) b",
    ]
    for grain, key in (
        (GRAIN_MONTH, f"{month.format(column='day')}, model, status"),
        (GRAIN_DAY_ALL, "day, '', ''"),
    ):
        statements += [
            f"INSERT INTO run_rollup (grain, day, model, status, {', '.join(TOTALS)}) "
            f"SELECT {grain}, {key}, {sums} FROM run_rollup WHERE grain = {GRAIN_DAY} GROUP BY 2, 3, 4",
            "INSERT INTO run_rollup_ms (grain, day, model, status, kind, bucket, n) "
            f"SELECT {grain}, {key}, kind, bucket, sum(n) FROM run_rollup_ms WHERE grain = {GRAIN_DAY} "
            "GROUP BY 2, 3, 4, 5, 6",
        ]
    return statements


def rebuild_statements(dialect: Dialect) -> list[str]:
    """`backfill_statements` for this dialect (a bulk load that bypassed the writers)."""
    return backfill_statements(
        dialect.rollup_day_sql("r.started_at"),
        dialect.rollup_duration_sql("r"),
        _join(dialect),
        dialect.int_type,
        dialect.rollup_month_sql("{column}"),
    )


class Rollup:
    """What some runs add to the rollup (or, subtracted, the change to apply)."""

    __slots__ = ("buckets", "cells")

    def __init__(self) -> None:
        self.cells: dict[Cell, list[float]] = {}
        self.buckets: dict[Bucket, int] = {}

    def minus(self, other: Rollup) -> Rollup:
        out = Rollup()
        for key in self.cells.keys() | other.cells.keys():
            mine = self.cells.get(key, [0] * len(TOTALS))
            theirs = other.cells.get(key, [0] * len(TOTALS))
            diff = [a - b for a, b in zip(mine, theirs, strict=True)]
            if any(diff):
                out.cells[key] = diff
        for bkey in self.buckets.keys() | other.buckets.keys():
            n = self.buckets.get(bkey, 0) - other.buckets.get(bkey, 0)
            if n:
                out.buckets[bkey] = n
        return out

    def __bool__(self) -> bool:
        return bool(self.cells or self.buckets)


def read_rollup(cur: Any, dialect: Dialect, where: str, params: Sequence[Any]) -> Rollup:
    """The contribution of the finished runs matching ``where`` (a condition on
    ``runs r``), as it stands in this transaction."""
    cells_sql, buckets_sql = _contribution_sql(
        dialect.rollup_day_sql("r.started_at"),
        dialect.rollup_duration_sql("r"),
        _join(dialect),
        dialect.int_type,
        where,
    )
    # one round trip: the cells' rows (kind 0), then the buckets' (their count as ``runs``)
    cur.execute(
        f"SELECT day, model, status, 0 AS kind, 0 AS bucket, {', '.join(TOTALS)} FROM ({cells_sql}) c "
        f"UNION ALL SELECT day, model, status, kind, bucket, n, {', '.join(['0'] * (len(TOTALS) - 1))} "
        f"FROM ({buckets_sql}) b",
        (*params, *params, *params),  # ``where`` in the cells, and twice in the buckets
    )
    found = Rollup()
    for day, model, status, kind, bucket, *totals in cur.fetchall():
        grains = _grains(_as_date(day), str(model), str(status))
        if int(kind) == 0:
            # TOTALS order; drivers hand back Decimal for some sums
            values = [
                float(v) if name == "cost_usd" else int(v)
                for name, v in zip(TOTALS, totals, strict=True)
            ]
            for key in grains:
                held = found.cells.get(key)
                found.cells[key] = (
                    values if held is None else [a + b for a, b in zip(held, values, strict=True)]
                )
        else:
            for key in grains:
                bkey = (*key, int(kind), int(bucket))
                found.buckets[bkey] = found.buckets.get(bkey, 0) + int(totals[0])
    return found


def _grains(day: date, model: str, status: str) -> tuple[Cell, Cell, Cell]:
    return (
        (GRAIN_DAY, day, model, status),
        (GRAIN_MONTH, day.replace(day=1), model, status),
        (GRAIN_DAY_ALL, day, "", ""),
    )


def read_runs(cur: Any, dialect: Dialect, run_ids: Sequence[str]) -> Rollup:
    """The contribution of these runs (by id)."""
    total = Rollup()
    for start in range(0, len(run_ids), _CHUNK):
        chunk = run_ids[start : start + _CHUNK]
        part = read_rollup(cur, dialect, f"r.run_id IN ({', '.join(['%s'] * len(chunk))})", chunk)
        _merge_into(total, part)
    return total


def _merge_into(total: Rollup, part: Rollup) -> None:
    for key, values in part.cells.items():
        held = total.cells.get(key)
        if held is None:
            total.cells[key] = list(values)
        else:
            total.cells[key] = [a + b for a, b in zip(held, values, strict=True)]
    for bkey, n in part.buckets.items():
        total.buckets[bkey] = total.buckets.get(bkey, 0) + n


def apply_rollup(cur: Any, dialect: Dialect, change: Rollup) -> None:
    """Add ``change`` to the stored cells: one upsert per table per chunk, keys in
    sorted order (the lock order every writer shares)."""
    if change.cells:
        columns: tuple[str, ...] = ("grain", "day", "model", "status", *TOTALS)
        rows = [(*key, *change.cells[key]) for key in sorted(change.cells)]
        _upsert(cur, dialect, "run_rollup", columns, 4, rows)
    if change.buckets:
        columns = ("grain", "day", "model", "status", "kind", "bucket", "n")
        brows = [(*key, change.buckets[key]) for key in sorted(change.buckets)]
        _upsert(cur, dialect, "run_rollup_ms", columns, 6, brows)


def _upsert(
    cur: Any,
    dialect: Dialect,
    table: str,
    columns: Sequence[str],
    keys: int,
    rows: Sequence[Sequence[Any]],
) -> None:
    marks = "(" + ", ".join(["%s"] * len(columns)) + ")"
    suffix = dialect.add_on_conflict(table, columns[:keys], columns[keys:])
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        cur.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([marks] * len(chunk))} {suffix}",
            tuple(value for row in chunk for value in row),
        )


@contextmanager
def keep_rollup(cur: Any, dialect: Dialect, run_ids: Iterable[str]) -> Iterator[None]:
    """Around a change to these runs (their rows or events) in ``cur``'s
    transaction: the rollup takes the difference their contribution makes."""
    ids = sorted(set(run_ids))
    before = Rollup()
    if ids:
        # usually running (nothing in the rollup yet): one look at the ids says so
        finished: list[str] = []
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            cur.execute(
                f"SELECT run_id FROM runs WHERE run_id IN ({', '.join(['%s'] * len(chunk))}) "
                "AND status <> 'running'",
                chunk,
            )
            finished += [str(row[0]) for row in cur.fetchall()]
        if finished:
            before = read_runs(cur, dialect, sorted(finished))
    yield
    if ids:
        change = read_runs(cur, dialect, ids).minus(before)
        if change:
            apply_rollup(cur, dialect, change)


@contextmanager
def forget_runs(cur: Any, dialect: Dialect, where: str, params: Sequence[Any]) -> Iterator[None]:
    """Around the deletion of the runs matching ``where`` (over ``runs r``): what they
    added is read before and taken out after (cells are locked last, as every
    writer locks them)."""
    gone = read_rollup(cur, dialect, where, params)
    yield
    if gone:
        apply_rollup(cur, dialect, Rollup().minus(gone))


def _join(dialect: Dialect) -> str:
    return "e.run_id = r.run_id" + (
        " AND e.run_started_at = r.started_at" if dialect.partitioned else ""
    )


def _as_date(value: Any) -> date:
    if isinstance(value, date):
        return value if type(value) is date else date(value.year, value.month, value.day)
    return date.fromisoformat(str(value))


# -- reading: percentiles of merged buckets ------------------------------------------------


# the buckets a percentile's ranks fall in (a rank either side to spare: Python's
# float rank may round the other way)
_RANKS = " OR ".join(
    f"(upto - n <= FLOOR((total - 1) * {q}) + 2 AND upto > FLOOR((total - 1) * {q}) - 1)" for q in ("0.5", "0.95")
)


def rank_days_sql(where: str, float_type: str) -> str:
    """`rank_buckets_sql` of `GRAIN_DAY_ALL` cells alone (``where``: over
    ``run_rollup_ms``), by day: one row per (day, kind, bucket) already, read in
    the key's order, so neither merged nor sorted (a third of the time on
    PostgreSQL, a quarter on MariaDB, for 90 days)."""
    return (
        "SELECT k, kind, bucket, n, upto, total FROM ("
        f"SELECT day AS k, kind, bucket, n, sum(CAST(n AS {float_type})) OVER (PARTITION BY day, kind ORDER BY bucket) "
        f"AS upto, sum(CAST(n AS {float_type})) OVER (PARTITION BY day, kind) AS total FROM run_rollup_ms "
        f"WHERE {where} AND grain = {GRAIN_DAY_ALL} AND model = '' AND status = '' AND n > 0) ranked "
        f"WHERE {_RANKS}"
    )


def rank_buckets_sql(parts: str, float_type: str) -> str:
    """Of ``parts``' (k, kind, bucket, n) rows merged: per (k, kind), the buckets that
    hold the ranks p50 and p95 interpolate between, as (k, kind, bucket, n, upto,
    total) (``upto``: how many values up to and including this bucket)."""
    ranks = _RANKS
    return (
        "SELECT k, kind, bucket, n, upto, total FROM ("
        "SELECT k, kind, bucket, n, sum(n) OVER (PARTITION BY k, kind ORDER BY bucket) AS upto, "
        "sum(n) OVER (PARTITION BY k, kind) AS total FROM ("
        # summed as doubles (exact below 2**53): an integer sum is a slow NUMERIC on PostgreSQL
        f"SELECT k, kind, bucket, sum(CAST(n AS {float_type})) AS n FROM ({parts}) parts GROUP BY k, kind, bucket"
        ") merged WHERE n > 0) ranked "
        f"WHERE {ranks}"
    )


def percentiles(rows: Iterable[tuple[int, int, int, int]]) -> tuple[float | None, float | None]:
    """(p50, p95) from `rank_buckets_sql`'s (bucket, n, upto, total) rows of one
    group, interpolated between neighbouring ranks as the exact path (numpy's
    default) is; each rank shown as its bucket's value."""
    found = sorted(rows, key=lambda row: row[2])
    if not found or found[0][3] <= 0:
        return None, None
    total = found[0][3]

    def at(rank: int) -> float:
        for bucket, n, upto, _total in found:
            if upto - n <= rank < upto:
                return bucket_value(bucket)
        raise AssertionError(f"rank {rank} is in no bucket read")

    def quantile(q: float) -> float:
        position = (total - 1) * q
        low = math.floor(position)
        frac = position - low
        lower = at(low)
        return lower if frac == 0 else lower + frac * (at(min(low + 1, total - 1)) - lower)

    return quantile(0.5), quantile(0.95)
