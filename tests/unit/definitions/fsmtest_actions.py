"""Good and bad action targets for tests of projections.actions.resolve."""

from projections.actions import Action

INSTANCES = []


class Counted(Action):
    """Counts its instances, to show resolve instantiates an Action subclass once."""

    def __init__(self):
        INSTANCES.append(self)

    def execute(self, context, obj):
        return f"counted:{obj['n']}"


class NotAnAction:
    def execute(self, context, obj):
        return "no"


class NoExecute(Action):
    pass


class NeedsArgs(Action):
    def __init__(self, client):
        self.client = client

    def execute(self, context, obj):
        return None


class FailsInInit(Action):
    def __init__(self):
        raise RuntimeError("no credentials in test")

    def execute(self, context, obj):
        return None


def plain(context, obj):
    return f"plain:{context['x']}"


def one_argument(context):
    return None


def flexible(context, obj=None, *rest):
    return "flexible"


class _Greeter(Action):
    def execute(self, context, obj):
        return "hello"


GREETER = _Greeter()
BASE_INSTANCE = Action()
NOT_CALLABLE = 42
