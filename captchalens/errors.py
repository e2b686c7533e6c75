"""The one base class for errors whose message is meant for a person.

`captchalens` (cli.py) prints a UserError's message and exits 1, without a
traceback; any other exception is a bug and keeps its traceback.  Each room
raises its own subclass (ContractError, ImageError, DataError, ConvertError,
HostError, ...), so callers can still catch just the kind they handle.
"""
from __future__ import annotations


class UserError(Exception):
    """Something the user can fix, said in words they can act on."""
