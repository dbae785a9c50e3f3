"""Searches sorted by properties on pgstac, in the order every catalog promises.

pgstac's ``search()`` sorts a property by its JSON value with PostgreSQL's defaults: no
value first when descending, strings before numbers (jsonb's order), objects and arrays
as values. Searches sorted by a property (or by ``datetime``, which sorts by the property
with null last) are answered here instead: pgstac builds the WHERE clause
(``stac_search_to_where``) and hydrates the items (``format_item``), and the ORDER BY and
the keyset pages are ours, as :func:`~pixelfleet.catalog.query.compare` orders:

- each sort key becomes SQL terms that are never NULL: for a property, "has it"
  (always ascending, so no value comes last), then "is it text" (numbers before strings),
  its number and its text (by code point, ``COLLATE "C"``);
- a page token holds those terms' values of the last item shown, per key.
"""

from __future__ import annotations

from typing import Any

from pixelfleet.catalog.query import UNDATED, SearchQuery

#: Sort keys pgstac's own search() orders as the contract does (columns, never null).
NATIVE = ("datetime", "id", "collection")
#: Searches count their matches up to this many; beyond it ``matched`` is None.
COUNT_CAP = 1000
#: The item's sort datetime (``datetime``, else ``start_datetime``) in epoch seconds;
#: pgstac's ``datetime`` column is the start of an item's interval whenever it has one.
_SORT_DATETIME = (
    "extract(epoch FROM coalesce((content->'properties'->>'datetime')::timestamptz,"
    " datetime))::float8"
)


def sorts_here(query: SearchQuery) -> bool:
    """Whether a search must be sorted here rather than by pgstac's search()."""
    return any(name not in NATIVE for name, _ in query.sortby)


def terms(name: str, direction: str) -> list[tuple[str, str]]:
    """SQL terms (never NULL) and their directions that order items by one sort key."""
    if name in ("id", "collection"):
        return [(f'{name} COLLATE "C"', direction)]
    if name == "datetime":
        return [(_SORT_DATETIME, direction)]
    if name == UNDATED:
        return [("((content->'properties'->>'datetime') IS NULL)::int", direction)]
    # Property names were checked (letters, digits, _ : . -): no quote can end the literal.
    value = f"(content->'properties'->'{name}')"
    kind = f"jsonb_typeof({value})"
    return [
        (f"(CASE WHEN {kind} IN ('number', 'boolean', 'string') THEN 0 ELSE 1 END)", "asc"),
        (f"(CASE WHEN {kind} = 'string' THEN 1 ELSE 0 END)", direction),
        (
            f"(CASE {kind} WHEN 'number' THEN ({value})::float8"
            f" WHEN 'boolean' THEN ({value})::bool::int ELSE 0 END)",
            direction,
        ),
        (f"(CASE WHEN {kind} = 'string' THEN {value} #>> '{{}}' ELSE '' END) COLLATE \"C\"",
         direction),
    ]  # fmt: skip


def page_sql(
    where: str, keys: list[tuple[str, str]], after: list[Any] | None, limit: int
) -> tuple[str, list[Any]]:
    """SQL and parameters for one page: each row is the hydrated item, then the values of
    each key's terms. ``after`` holds those values (a list per key) of the last item shown."""
    per_key = [terms(name, direction) for name, direction in keys]
    flat = [term for key_terms in per_key for term in key_terms]
    # The WHERE clause is pgstac's SQL text: a % in it (a LIKE pattern) is not a parameter.
    conds, params = [f"({where.replace('%', '%%')})" if where.strip() else "TRUE"], []
    if after is not None:
        values = [v for key_values in after for v in key_values]
        clauses = []
        for i, (expr, direction) in enumerate(flat):
            ties = [f"{e} = %s" for e, _ in flat[:i]]
            op = "<" if direction == "desc" else ">"
            clauses.append("(" + " AND ".join([*ties, f"{expr} {op} %s"]) + ")")
            params += [*values[:i], values[i]]
        conds.append("(" + " OR ".join(clauses) + ")")
    columns = ", ".join(expr for expr, _ in flat)
    order = ", ".join(f"{expr} {direction.upper()}" for expr, direction in flat)
    sql = (
        f"SELECT format_item(i, '{{}}'::jsonb, true), {columns} FROM items i"
        f" WHERE {' AND '.join(conds)} ORDER BY {order} LIMIT %s"
    )
    return sql, [*params, limit]


def count_sql(where: str) -> str:
    """SQL counting the matches of a WHERE clause, up to one past :data:`COUNT_CAP`."""
    condition = where if where.strip() else "TRUE"
    return f"SELECT count(*) FROM (SELECT 1 FROM items WHERE {condition} LIMIT {COUNT_CAP + 1}) m"


def last_values(row: tuple[Any, ...], keys: list[tuple[str, str]]) -> list[list[Any]]:
    """The terms' values of a result row (after the item), grouped per key, for a token."""
    out, at = [], 1
    for name, direction in keys:
        width = len(terms(name, direction))
        out.append(list(row[at : at + width]))
        at += width
    return out
