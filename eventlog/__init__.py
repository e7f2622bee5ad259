"""The log: event records, the msgpack codec, log backends, failover and chaos."""

from .codec import decode, encode
from .errors import DecodeError, EventlogError, FsmlogError, RecordTooLarge
from .event import Event

__all__ = ["Event", "encode", "decode", "FsmlogError", "EventlogError", "DecodeError", "RecordTooLarge"]
