"""The connector registry: an explicit name → class dict (no plugin magic).

Everything that lists vendors (config, `syncd init`, the demo, the README, the contract
test) reads this dict, in this order.
"""

from __future__ import annotations

from typing import TypeVar

from syncd.vendors.base import Connector, Contact, Page, Result, Status

REGISTRY: dict[str, type[Connector]] = {}
C = TypeVar("C", bound=type[Connector])


def register(cls: C) -> C:
    """Add a connector under its `name`; a second connector with the same name is refused."""
    if cls.name in REGISTRY:
        raise ValueError(f"a vendor named {cls.name!r} is already registered")
    REGISTRY[cls.name] = cls
    return cls


def _register() -> None:
    from syncd.vendors.altcraft import Altcraft
    from syncd.vendors.dropthought import Dropthought
    from syncd.vendors.esputnik import ESputnik
    from syncd.vendors.hellocustomer import HelloCustomer
    from syncd.vendors.signalvine import SignalVine

    # upserts first, then triggers: the order of the README's vendor reference
    for cls in (ESputnik, SignalVine, HelloCustomer, Dropthought, Altcraft):
        register(cls)


_register()

__all__ = ["REGISTRY", "Connector", "Contact", "Page", "Result", "Status", "register"]
