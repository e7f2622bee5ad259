"""Actions of the purchase-approval example. They print what a real one would email or call."""

from __future__ import annotations

from fsmlog import Action


class AskApprover(Action):
    def execute(self, context, obj):
        print(f"[{context.correlation_id}] please approve {context.get('item')!r} for {context.get('amount')}: "
              f"fsmlog send {context.correlation_id} approve --data '{{\"by\": \"you\"}}'")


class Remind(Action):
    def execute(self, context, obj):
        context["reminders"] = context.get("reminders", 0) + 1
        print(f"[{context.correlation_id}] reminder: {context.get('item')!r} still waits for a decision")
        return "reminded"


class PlaceOrder(Action):
    def execute(self, context, obj):
        decision = context.get("event_data") or {}  # what `fsmlog send --data` carried
        context["approved_by"] = decision.get("by")
        print(f"[{context.correlation_id}] approved by {context['approved_by']}: ordering {context.get('item')!r}")


class Notify(Action):
    def execute(self, context, obj):
        data = context.get("event_data")  # a rejection's reason, if the sender gave one; an expiry has none
        print(f"[{context.correlation_id}] request {context.current_state}" + (f": {data}" if data else ""))
