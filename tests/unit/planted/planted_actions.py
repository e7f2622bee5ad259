"""Actions of the planted-bug machines (broken.yaml) and of their fixed versions (fixed.yaml).

Each broken action has one bug the testing kit must find, with the property it breaks:

- ``Triage`` returns an event its state does not declare when the amount is over 100 (P1);
- ``Remember`` decides by what this process saw before, so a re-run of a step differs (P3);
- ``Countdown`` never reaches zero from a count of zero or less (P2);
- ``Debit`` takes money off a ledger kept in a file, once per run of the step: a step run
  again after a crash or a lost answer debits twice (P3/P5). ``DebitOnce`` keys the
  debit on ``obj["idempotency_key"]``;
- ``Tag`` puts a set in the context for amounts over 500, which cannot travel (P4).
"""

from __future__ import annotations

import json
from pathlib import Path

from fsmlog import Action

_seen: set[str] = set()  # hidden process state: the machines this process has already run


class Triage(Action):
    def execute(self, context, obj):
        return "small" if context["amount"] <= 100 else "large"


class TriageDeclared(Action):
    def execute(self, context, obj):
        return "small" if context["amount"] <= 100 else "review"


class Remember(Action):
    def execute(self, context, obj):
        first = context.correlation_id not in _seen
        _seen.add(context.correlation_id)
        context["route"] = "fresh" if first else "again"
        return "go"


class Route(Action):
    def execute(self, context, obj):
        context["route"] = "fresh" if context["amount"] % 2 == 0 else "again"
        return "go"


class Countdown(Action):
    def execute(self, context, obj):
        context["n"] -= 1
        return "zero" if context["n"] == 0 else "tick"


class CountdownBounded(Action):
    def execute(self, context, obj):
        context["n"] -= 1
        return "zero" if context["n"] <= 0 else "tick"


LEDGER = Path("wallet.json")  # relative: the kit runs every case in a directory of its own


def _ledger() -> dict:
    return json.loads(LEDGER.read_text()) if LEDGER.exists() else {"balances": {}, "debits": {}}


class Debit(Action):
    def execute(self, context, obj):
        ledger = _ledger()
        cid = context.correlation_id
        ledger["balances"][cid] = ledger["balances"].get(cid, 1000) - context["amount"]
        LEDGER.write_text(json.dumps(ledger))
        context["balance"] = ledger["balances"][cid]
        return "debited"


class DebitOnce(Action):
    def execute(self, context, obj):
        ledger = _ledger()
        key = obj["idempotency_key"]
        if key not in ledger["debits"]:
            cid = context.correlation_id
            ledger["balances"][cid] = ledger["balances"].get(cid, 1000) - context["amount"]
            ledger["debits"][key] = ledger["balances"][cid]
            LEDGER.write_text(json.dumps(ledger))
        context["balance"] = ledger["debits"][key]
        return "debited"


class Tag(Action):
    """Puts a set in the context for large amounts: it cannot travel in the log (P4)."""

    def execute(self, context, obj):
        context["tags"] = {"large"} if context["amount"] > 500 else ["small"]
        return "tagged"


class TagAsList(Action):
    def execute(self, context, obj):
        context["tags"] = ["large" if context["amount"] > 500 else "small"]
        return "tagged"
