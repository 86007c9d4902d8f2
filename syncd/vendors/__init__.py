"""The connector registry: an explicit name → class dict (no plugin magic)."""

from __future__ import annotations

from syncd.vendors.base import Connector, Contact, Page, Result, Status

REGISTRY: dict[str, type[Connector]] = {}


def _register() -> None:
    from syncd.vendors.altcraft import Altcraft
    from syncd.vendors.dropthought import Dropthought
    from syncd.vendors.esputnik import ESputnik
    from syncd.vendors.hellocustomer import HelloCustomer
    from syncd.vendors.signalvine import SignalVine

    for cls in (Altcraft, Dropthought, ESputnik, HelloCustomer, SignalVine):
        REGISTRY[cls.name] = cls


_register()

__all__ = ["REGISTRY", "Connector", "Contact", "Page", "Result", "Status"]
