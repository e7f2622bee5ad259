"""The ``context`` an action receives: the user context as a dict, plus read-only machine facts."""

from __future__ import annotations

from typing import Any


def _fact(name: str) -> property:
    """A read-only property over one of the machine's facts."""
    return property(lambda self: self._facts[name], doc=f"The machine's {name.replace('_', ' ')} (read-only).")


class ActionContext(dict):
    """A dict of the user context that also exposes, read-only, where the machine is.

    Only the dict contents travel in the log; the attributes are rebuilt from
    the record on every step.
    """

    __slots__ = ("_facts",)

    def __init__(self, data: dict[str, Any], facts: dict[str, Any]):
        super().__init__(data)
        self._facts = facts

    correlation_id = _fact("correlation_id")
    machine_name = _fact("machine_name")
    steps = _fact("steps")
    retries = _fact("retries")
    max_retries = _fact("max_retries")
    current_state = _fact("current_state")
    current_event = _fact("current_event")

    @property
    def additional_delay_seconds(self) -> float:
        """Seconds the next step waits beyond its transition's ``delay`` (the older framework's knob);
        an action sets it, it applies to the one step it chose, then it is back to 0."""
        return self._facts.get("additional_delay_seconds", 0)

    @additional_delay_seconds.setter
    def additional_delay_seconds(self, seconds: float) -> None:
        self._facts["additional_delay_seconds"] = seconds

    def take_delay(self) -> float:
        """The extra delay an action asked for (attribute or the ``additional_delay_seconds`` key), reset."""
        extra = self._facts.pop("additional_delay_seconds", 0)
        if "additional_delay_seconds" in self:
            extra = self.pop("additional_delay_seconds")
        if isinstance(extra, bool) or not isinstance(extra, (int, float)) or not extra >= 0:
            raise ValueError(f"additional_delay_seconds must be a number of seconds >= 0, got {extra!r}")
        return float(extra)

    def __repr__(self) -> str:
        return f"ActionContext({dict.__repr__(self)}, {self._facts!r})"
