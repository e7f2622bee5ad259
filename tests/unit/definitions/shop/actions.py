"""Actions named by the contract's example (``shop.actions.*``)."""

from projections.actions import Action


class Log(Action):
    def execute(self, context, obj):
        context.setdefault("log", []).append(context.get("state", "?"))
        return None


class Validate(Action):
    def execute(self, context, obj):
        if context["amount"] <= 0:
            return "reject"
        context["validated"] = True
        return "ok"


class Audit(Action):
    def execute(self, context, obj):
        context["audited"] = True
        return None


def refund(context, obj):
    """A plain-function action."""
    context["refunded"] = True
    return "done"
