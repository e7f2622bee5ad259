"""Both sides of a source: which stream a position belongs to, and reading a machine from every side.

A source with a secondary (``eventlog.failover.FailoverProxy``) writes to
whichever side answers, so the records of one machine can live on both
streams. The rule (docs/GUARANTEES.md) is that whatever is written to a
secondary is read from there too; this module is the one place that knows how.

Positions name their side. A position served by the secondary is written
``"secondary|" + position``; an untagged position is the primary's. Neither
backend's own positions contain ``|`` (Kinesis: ``shardId-...:sequence``;
the embedded log: decimal row ids), so the tag never collides.

``read_machine`` folds nothing itself: it returns the union of one machine's
records from every readable side (on the side the ``after`` position names,
only the records after it; on every other side, all of them). The fold is
order- and duplicate-insensitive, so a union is exactly right.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from .errors import BackendError
from .log import LogRecord

log = logging.getLogger("fsmlog.sides")

PRIMARY = "primary"
SECONDARY = "secondary"
SIDES = (PRIMARY, SECONDARY)
SEPARATOR = "|"

Reader = Callable[[Any, str, "str | None"], list[LogRecord]]


def _is_failover(source: Any) -> bool:
    try:
        return getattr(source, "primary", None) is not None and getattr(source, "secondary", None) is not None
    except AttributeError:  # pragma: no cover - a proxy that refuses the lookup
        return False


def sides(source: Any) -> list[tuple[str, Any]]:
    """``[("primary", backend)]`` for a plain backend, both sides for a failover proxy."""
    if _is_failover(source):
        return [(PRIMARY, source.primary), (SECONDARY, source.secondary)]
    return [(PRIMARY, source)]


def side_of(source: Any, side: str) -> Any | None:
    """The backend serving ``side`` of ``source`` (``None``: the source has no such side)."""
    return dict(sides(source)).get(side)


def readable(backend: Any) -> bool:
    """Whether fsmlog can read this backend back (``read`` and ``read_key``)."""
    return callable(getattr(backend, "read", None)) and callable(getattr(backend, "read_key", None))


def readable_sides(source: Any) -> list[tuple[str, Any]]:
    """The sides of ``source`` that can be read back (for the worker, scan and rebuild)."""
    return [(name, backend) for name, backend in sides(source) if readable(backend)]


def unreadable_sides(source: Any) -> list[tuple[str, Any]]:
    """The sides fsmlog cannot read back (an SNS topic, an SQS queue...), to name them in warnings."""
    return [(name, backend) for name, backend in sides(source) if not readable(backend)]


def tag_position(side: str, position: str) -> str:
    """``position`` as it is stored outside its stream: tagged when it is the secondary's."""
    if side not in SIDES:
        raise ValueError(f"unknown side {side!r}; sides are {PRIMARY!r} and {SECONDARY!r}")
    if side == PRIMARY:
        return position
    name, raw = split_position(position)
    if name == SECONDARY:  # already tagged
        return position
    return f"{SECONDARY}{SEPARATOR}{raw}"


def split_position(position: str | None) -> tuple[str, str | None]:
    """``(side, the stream's own position)``: untagged (and ``None``) positions are the primary's."""
    if position is None:
        return PRIMARY, None
    head, sep, rest = position.partition(SEPARATOR)
    if sep and head in SIDES:
        return head, rest
    return PRIMARY, position


def tagged(side: str, records: list[LogRecord]) -> list[LogRecord]:
    """``records`` read from ``side`` with their positions tagged for use outside that stream."""
    if side == PRIMARY:
        return list(records)
    return [r._replace(position=tag_position(side, r.position)) for r in records]


def _read_key(backend: Any, key: str, after: str | None) -> list[LogRecord]:
    return backend.read_key(key, after=after)


def read_machine(source: Any, key: str, after: str | None = None, *,
                 reader: Reader | None = None,
                 on_skipped: Callable[[str, BackendError], None] | None = None) -> list[LogRecord]:
    """Every record of one machine from every readable side (see the module docstring).

    ``after`` (a possibly tagged position) limits the side it names; the other
    sides are read in full. Records from the secondary carry tagged positions.
    A side that raises ``BackendError`` is skipped with a warning when another
    side answered; when none answered, the first error is raised. ``reader``
    (``(backend, key, after) -> records``) replaces ``backend.read_key``, e.g.
    to follow Kinesis shard lineage. ``on_skipped(side, error)`` hears of each
    skipped side, so a caller that found nothing can say why instead of "no such machine".
    """
    read = reader or _read_key
    after_side, after_raw = split_position(after)
    candidates = readable_sides(source)
    if after_raw is not None and after_side not in {name for name, _ in candidates}:
        log.warning("position %r names the %s side of %s, which is not configured or cannot be read; "
                    "reading every side from its start", after, after_side, getattr(source, "name", source))
    out: list[LogRecord] = []
    errors: list[tuple[str, BackendError]] = []
    answered = 0
    for name, backend in candidates:
        side_after = after_raw if name == after_side else None
        try:
            records = read(backend, key, side_after)
        except BackendError as exc:
            errors.append((name, exc))
            continue
        answered += 1
        out.extend(tagged(name, records))
    if errors:
        if not answered:
            raise errors[0][1]
        for name, err in errors:
            log.warning("reading machine %s: the %s side of %s failed and was skipped: %s",
                        key, name, getattr(source, "name", source), err)
            if on_skipped is not None:
                on_skipped(name, err)
    return out


def pages(source: Any, page_size: int) -> Iterator[list[LogRecord]]:
    """Every record on every readable side, a page at a time: the whole-log reads (status tables, id
    prefixes) that cannot name a key."""
    for _side, backend in readable_sides(source):
        after = None
        while True:
            page = backend.read(after, page_size)
            if not page:
                break
            yield page
            after = page[-1].position
