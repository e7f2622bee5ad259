"""Actions of the order pipeline (examples/orders/fsm.yaml).

The user context of an order machine::

    {"customer": {"email": "ada@example.com", "name": "Ada"},
     "items": [{"sku": "book-42", "qty": 2}],
     "amount": "39.90",                       # optional: the price the customer was quoted
     "currency": "EUR"}

A one-line order may be given flat: ``{"sku": "book-42", "quantity": 2,
"amount": "39.90", "customer": "ada@example.com"}``.

Started with no items (``fsmlog run ... --count 5``), an order is a demo order:
a small cart picked deterministically from the machine's correlation id.

External effects go through two stand-ins kept in one SQLite file
(``ORDERS_GATEWAY_DB``, default ``.fsmlog/orders-gateway.db``):

- ``PaymentGateway``, a card processor: like a real one it deduplicates charges
  by idempotency key, and, to show the engine's retries, its first request for
  every key times out;
- ``Warehouse``, the stock ledger: a reservation takes units off the shelf in one
  transaction, all lines or none, keyed by the reserving step's idempotency key
  (a re-run step gets its reservation back, not a second one); a release puts
  them back once.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from decimal import Decimal, InvalidOperation
from pathlib import Path

from fsmlog import Action

# sku -> (title, unit price in cents, units in stock, weight in grams)
CATALOGUE: dict[str, tuple[str, int, int, int]] = {
    "book-42": ("Field guide to state machines", 1995, 120, 600),
    "mug-7": ("Mug, 'Append only'", 1290, 300, 350),
    "lamp-3": ("Desk lamp", 4900, 15, 1800),
    "chair-9": ("Office chair", 18900, 4, 14000),
    "poster-1": ("Poster, Kinesis shards", 990, 0, 150),
}
CURRENCIES = ("EUR", "USD", "GBP")
MAX_LINES = 20
CARD_LIMIT_CENTS = 50_000  # the demo card declines anything above 500.00


class PaymentGatewayTimeout(Exception):
    """The gateway did not answer in time; the charge may or may not have happened (retry with the same key)."""


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


class PaymentGateway:
    """A card processor stand-in: idempotent charges keyed by the caller's idempotency key.

    Every key's first request times out (after recording nothing), as a flaky
    network would; the retry with the same key succeeds. A repeated successful
    request returns the original charge, never a second one.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS attempts (key TEXT PRIMARY KEY, n INTEGER NOT NULL)")
            conn.execute("CREATE TABLE IF NOT EXISTS charges (key TEXT PRIMARY KEY, charge_id TEXT NOT NULL, "
                         "amount INTEGER NOT NULL, currency TEXT NOT NULL, refunded INTEGER NOT NULL DEFAULT 0)")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    def charge(self, key: str, amount: int, currency: str) -> str | None:
        """The charge id, or None when the card declines. Raises ``PaymentGatewayTimeout`` on a key's first try."""
        with self._lock, self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                n = conn.execute(
                    "INSERT INTO attempts (key, n) VALUES (?, 1) ON CONFLICT (key) DO UPDATE SET n = n + 1 "
                    "RETURNING n", (key,),
                ).fetchone()[0]
                if n == 1:
                    conn.execute("COMMIT")
                    raise PaymentGatewayTimeout("timed out on purpose: this example gateway fails every "
                                                "charge's first try, to show a retry")
                if amount > CARD_LIMIT_CENTS:
                    conn.execute("COMMIT")
                    return None
                row = conn.execute("SELECT charge_id FROM charges WHERE key = ?", (key,)).fetchone()
                if row is None:
                    charge_id = f"ch_{_stable_int(key):016x}"
                    conn.execute("INSERT INTO charges (key, charge_id, amount, currency) VALUES (?, ?, ?, ?)",
                                 (key, charge_id, amount, currency))
                else:
                    charge_id = row[0]
                conn.execute("COMMIT")
                return charge_id
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def charges(self) -> list[tuple[str, str, int, str]]:
        with self._connect() as conn:
            return conn.execute("SELECT key, charge_id, amount, currency FROM charges ORDER BY key").fetchall()

    def attempts(self, key: str) -> int:
        with self._connect() as conn:
            row = conn.execute("SELECT n FROM attempts WHERE key = ?", (key,)).fetchone()
        return row[0] if row else 0


class Warehouse:
    """Units on the shelf per sku (starting at the catalogue's stock), and the reservations holding some."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS shelf (sku TEXT PRIMARY KEY, units INTEGER NOT NULL)")
            conn.execute("CREATE TABLE IF NOT EXISTS reserved (reservation TEXT NOT NULL, sku TEXT NOT NULL, "
                         "qty INTEGER NOT NULL, released INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (reservation, sku))")
            conn.executemany("INSERT OR IGNORE INTO shelf (sku, units) VALUES (?, ?)",
                             [(sku, stock) for sku, (_, _, stock, _) in CATALOGUE.items()])

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    def reserve(self, reservation: str, items: list[dict]) -> list[str]:
        """Take every line off the shelf, or none; the lines that are short (empty: reserved).
        The same ``reservation`` again returns what it got the first time."""
        wanted: dict[str, int] = {}
        for item in items:
            wanted[item["sku"]] = wanted.get(item["sku"], 0) + item["qty"]
        with self._lock, self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if conn.execute("SELECT 1 FROM reserved WHERE reservation = ?", (reservation,)).fetchone():
                    conn.execute("COMMIT")
                    return []
                short = []
                for sku, qty in wanted.items():
                    units = conn.execute("SELECT units FROM shelf WHERE sku = ?", (sku,)).fetchone()[0]
                    if qty > units:
                        short.append(f"{sku} ({qty} wanted, {units} in stock)")
                if not short:
                    for sku, qty in wanted.items():
                        conn.execute("UPDATE shelf SET units = units - ? WHERE sku = ?", (qty, sku))
                        conn.execute("INSERT INTO reserved (reservation, sku, qty) VALUES (?, ?, ?)",
                                     (reservation, sku, qty))
                conn.execute("COMMIT")
                return short
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def release(self, reservation: str) -> None:
        """Put a reservation's units back on the shelf, once however often it is asked."""
        with self._lock, self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            rows = conn.execute("SELECT sku, qty FROM reserved WHERE reservation = ? AND released = 0",
                                (reservation,)).fetchall()
            for sku, qty in rows:
                conn.execute("UPDATE shelf SET units = units + ? WHERE sku = ?", (qty, sku))
            conn.execute("UPDATE reserved SET released = 1 WHERE reservation = ?", (reservation,))
            conn.execute("COMMIT")

    def levels(self) -> dict[str, int]:
        with self._connect() as conn:
            return dict(conn.execute("SELECT sku, units FROM shelf ORDER BY sku").fetchall())

    def held(self) -> dict[str, int]:
        """Units held by reservations not released, per sku."""
        with self._connect() as conn:
            return dict(conn.execute("SELECT sku, SUM(qty) FROM reserved WHERE released = 0 GROUP BY sku"))


_gateways: dict[str, PaymentGateway] = {}
_warehouses: dict[str, Warehouse] = {}


def _store_path() -> str:
    # absolute, so a process that changes directory (the test kit runs each case in its own) gets its own store
    return os.path.abspath(os.environ.get("ORDERS_GATEWAY_DB", ".fsmlog/orders-gateway.db"))


def gateway() -> PaymentGateway:
    path = _store_path()
    gw = _gateways.get(path)
    if gw is None:
        gw = _gateways[path] = PaymentGateway(path)
    return gw


def warehouse() -> Warehouse:
    path = _store_path()
    wh = _warehouses.get(path)
    if wh is None:
        wh = _warehouses[path] = Warehouse(path)
    return wh


def demo_order(correlation_id: str) -> dict:
    """A small in-stock cart, the same for the same id."""
    seed = _stable_int(correlation_id)
    skus = [s for s, (_, _, stock, _) in CATALOGUE.items() if stock > 0 and s != "chair-9"]
    lines = 1 + seed % 3
    items = [{"sku": skus[(seed >> (8 * i)) % len(skus)], "qty": 1 + (seed >> (4 * i)) % 3} for i in range(lines)]
    merged: dict[str, int] = {}
    for item in items:
        merged[item["sku"]] = merged.get(item["sku"], 0) + item["qty"]
    name = ("Ada", "Grace", "Edsger", "Barbara", "Leslie")[seed % 5]
    return {
        "customer": {"name": name, "email": f"{name.lower()}.{correlation_id[:6]}@example.com"},
        "items": [{"sku": s, "qty": q} for s, q in merged.items()],
        "currency": "EUR",
        "demo": True,
    }


def _cents(amount) -> int | None:
    try:
        value = Decimal(str(amount))
    except InvalidOperation:
        return None
    return int(value * 100) if value == value.quantize(Decimal("0.01")) else None


def normalize_order(context) -> None:
    """Accept the flat one-line form too: sku/quantity/customer-email at the top level."""
    if "items" not in context and "sku" in context:
        context["items"] = [{"sku": context.pop("sku"), "qty": context.pop("quantity", 1)}]
    customer = context.get("customer")
    if isinstance(customer, str):
        context["customer"] = {"email": customer, "name": customer.split("@")[0].capitalize()}


class ValidateOrder(Action):
    """Check the order's shape, price it, and reject what cannot be fulfilled as asked."""

    def execute(self, context, obj):
        normalize_order(context)
        if not context.get("items"):
            context.update(demo_order(context.correlation_id))
        problems = []
        items = context.get("items")
        if not isinstance(items, list) or not items:
            problems.append("the order has no items")
            items = []
        if len(items) > MAX_LINES:
            problems.append(f"at most {MAX_LINES} lines per order")
        email = str((context.get("customer") or {}).get("email", ""))
        if "@" not in email.strip("@"):
            problems.append(f"customer email {email!r} is not an address")
        currency = context.get("currency", "EUR")
        if currency not in CURRENCIES:
            problems.append(f"currency {currency!r} is not one of {', '.join(CURRENCIES)}")
        subtotal = 0
        weight = 0
        for i, item in enumerate(items):
            sku = item.get("sku") if isinstance(item, dict) else None
            qty = item.get("qty") if isinstance(item, dict) else None
            if sku not in CATALOGUE:
                problems.append(f"line {i + 1}: unknown sku {sku!r}")
                continue
            if not isinstance(qty, int) or isinstance(qty, bool) or qty < 1:
                problems.append(f"line {i + 1}: quantity {qty!r} must be a positive whole number")
                continue
            _, price, _, grams = CATALOGUE[sku]
            subtotal += price * qty
            weight += grams * qty
        if "amount" in context and not problems:
            quoted = _cents(context["amount"])
            if quoted is None:
                problems.append(f"amount {context['amount']!r} is not a price like '39.90'")
            elif quoted != subtotal:
                problems.append(f"quoted amount {context['amount']} differs from the price {subtotal / 100:.2f}")
        if problems:
            context["rejection"] = "; ".join(problems)
            return "invalid"
        context.update(total=subtotal, weight_g=weight, currency=currency)
        return "valid"


class ReserveStock(Action):
    """Take every line off the warehouse's shelf, all or nothing."""

    def execute(self, context, obj):
        # the reservation id is derived from the step's idempotency key: re-running the step
        # (after a crash or a retry) finds the same reservation instead of taking the units twice
        reservation = f"res_{_stable_int(obj['idempotency_key']):012x}"
        short = warehouse().reserve(reservation, context["items"])
        if short:
            context["rejection"] = "out of stock: " + ", ".join(short)
            return "out_of_stock"
        context["reservation"] = reservation
        return "reserved"


class ReleaseStock(Action):
    """Give reserved units back when payment is declined."""

    def execute(self, context, obj):
        released = context.pop("reservation", None)
        if released:
            warehouse().release(released)
            context["released_reservation"] = released


class ChargePayment(Action):
    """Charge the order's total once, whatever the retries: the gateway deduplicates by idempotency key."""

    def execute(self, context, obj):
        charge_id = gateway().charge(obj["idempotency_key"], context["total"], context["currency"])
        if charge_id is None:
            context["rejection"] = f"card declined for {context['total'] / 100:.2f} {context['currency']}"
            return "declined"
        context["charge_id"] = charge_id
        return "charged"


class ShipOrder(Action):
    """Book a parcel: the carrier by weight, a tracking number stable for the order."""

    def execute(self, context, obj):
        weight = context["weight_g"]
        carrier = "letterpost" if weight <= 1000 else "parcel" if weight <= 20000 else "freight"
        context["shipment"] = {
            "carrier": carrier,
            "tracking": f"TRK{_stable_int(context.correlation_id) % 10**10:010d}",
            "parcels": max(1, -(-weight // 20000)),
        }
        return "shipped"


class NotifyCustomer(Action):
    def execute(self, context, obj):
        customer = context["customer"]
        total = f"{context['total'] / 100:.2f} {context['currency']}"
        context.setdefault("notifications", []).append({
            "to": customer["email"],
            "subject": f"Order {context.correlation_id[:8]} is on its way",
            "body": f"Hello {customer.get('name', '')}, we charged {total}; "
                    f"track it with {context['shipment']['carrier']} {context['shipment']['tracking']}.",
        })
        return "notified"


class NotifyRejection(Action):
    def execute(self, context, obj):
        email = str((context.get("customer") or {}).get("email", ""))
        if "@" in email:
            context.setdefault("notifications", []).append({
                "to": email,
                "subject": f"Order {context.correlation_id[:8]} could not be completed",
                "body": context.get("rejection", "your order was rejected"),
            })
