"""Ids on the command line: a full id, or any unique prefix of one.

Tables show ids short (``short_ids``: 8 characters, longer only where two
shown ids would share them); every command that takes a machine or dead
letter id accepts such a prefix, resolved here against the ids that exist.
An exact id always wins over ids it is a prefix of. Resolving a prefix reads the
partition keys of every readable side of the stream (a full 32-character id is
taken as given, so scripts that pass whole ids pay nothing).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from eventlog.errors import FsmlogError
from eventlog.log import EventLog

if TYPE_CHECKING:
    from handlers.deadletters import DeadLetterStore

    from . import Runtime

SHORT = 8  # characters of an id in tables (as `fsmlog run` shows them)
FULL = 32  # a generated correlation id: taken as given, nothing to look up
SHOWN_CANDIDATES = 5
READ_PAGE = 5000


class IdError(FsmlogError):
    """An id given on the command line that names no one thing. ``prefix`` is what was given,
    ``candidates`` the ids it could mean (empty: none), ``kind`` what was looked for."""

    def __init__(self, message: str, *, prefix: str, candidates: tuple[str, ...], kind: str) -> None:
        super().__init__(message)
        self.prefix = prefix
        self.candidates = candidates
        self.kind = kind


class AmbiguousId(IdError):
    """A prefix shared by several ids."""


class UnknownId(IdError):
    """An id that is neither an id nor the prefix of one."""


def short_ids(ids: Iterable[str], at_least: int = SHORT) -> dict[str, str]:
    """Each id's shortest prefix of ``at_least`` characters or more that no other of ``ids`` starts with."""
    unique = sorted(set(ids))
    short: dict[str, str] = {}
    for i, cid in enumerate(unique):
        n = at_least
        for other in (unique[i - 1] if i else None, unique[i + 1] if i + 1 < len(unique) else None):
            if other is not None:  # sorted: the neighbours share the longest prefixes
                n = max(n, _common(cid, other) + 1)
        short[cid] = cid[:n]
    return short


def _common(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def resolve(given: str, known: Iterable[str], *, kind: str, where: str, listing: str) -> str:
    """``given`` if it is one of ``known``, else the one id of ``known`` it is a prefix of.

    Raises ``AmbiguousId`` listing the candidates, or ``UnknownId``; ``listing`` is the command
    that lists the ids (the fix named in the error)."""
    matches = set()
    for cid in known:
        if cid == given:
            return cid
        if cid.startswith(given):
            matches.add(cid)
    if len(matches) == 1:
        return matches.pop()
    found = tuple(sorted(matches))
    if found:
        shown = ", ".join(found[:SHOWN_CANDIDATES]) + (f" and {len(found) - SHOWN_CANDIDATES} more"
                                                        if len(found) > SHOWN_CANDIDATES else "")
        raise AmbiguousId(f"{kind} id {given!r} is ambiguous in {where}: {len(found)} ids start with it "
                          f"({shown}); give more characters", prefix=given, candidates=found, kind=kind)
    raise UnknownId(f"no {kind} with id {given!r} (or an id starting with it) in {where}; `{listing}` lists them",
                    prefix=given, candidates=(), kind=kind)


def machine_ids(log: EventLog) -> set[str]:
    """The correlation id of every machine with a record in a readable side of the stream."""
    from eventlog.sides import pages

    ids: set[str] = set()
    for page in pages(log, READ_PAGE):
        ids.update(r.key for r in page)
    return ids


def resolve_machine(rt: Runtime, given: str, *, listing: str = "fsmlog status") -> str:
    """The machine id ``given`` names in ``rt``'s stream: itself when it is a full id or has records or a
    snapshot, else the one id it is a prefix of. ``listing`` is what lists the ids (named in the error)."""
    from eventlog.sides import read_machine, readable_sides

    log = rt.log
    if len(given) >= FULL or not readable_sides(log):  # nothing to look prefixes up in: taken as given
        return given
    if read_machine(log, given) or rt.engine.load_snapshot(given) is not None:
        return given
    where = " + ".join(b.name for _, b in readable_sides(log))
    return resolve(given, machine_ids(log), kind="machine", where=where, listing=listing)


def resolve_letter(store: DeadLetterStore, given: str, limit: int = 1_000_000, *,
                   listing: str = "fsmlog dead-letters list") -> str:
    """The dead letter id ``given`` names: itself when it exists, else the one id it is a prefix of."""
    if store.get(given) is not None:
        return given
    return resolve(given, (x.id for x in store.list(limit)), kind="dead letter", where=store.name,
                   listing=listing)
