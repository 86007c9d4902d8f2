"""The connector registry: an explicit name → class dict (no plugin magic)."""

from __future__ import annotations

from syncd.vendors.base import Connector, Contact, Page, Result, Status

REGISTRY: dict[str, type[Connector]] = {}


def _register() -> None:
    from syncd.vendors.esputnik import ESputnik

    for cls in (ESputnik,):
        REGISTRY[cls.name] = cls


_register()

__all__ = ["REGISTRY", "Connector", "Contact", "Page", "Result", "Status"]
