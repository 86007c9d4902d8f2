"""Faithful local simulators of the vendors, served over real HTTP on loopback.

Each is written from the vendor's own documents and imports nothing from `syncd.vendors`
(nor does any connector import a simulator): `SIMULATORS` is keyed by the registry's
names, and a test checks that both hold the same vendors.
"""

from __future__ import annotations

from syncd.sandbox.altcraft import AltcraftSim
from syncd.sandbox.base import Server, Simulator, Stack
from syncd.sandbox.dropthought import DropthoughtSim
from syncd.sandbox.esputnik import ESputnikSim
from syncd.sandbox.hellocustomer import HelloCustomerSim
from syncd.sandbox.signalvine import SignalVineSim

SIMULATORS: dict[str, type[Simulator]] = {
    cls.name: cls
    for cls in (AltcraftSim, DropthoughtSim, ESputnikSim, HelloCustomerSim, SignalVineSim)
}

__all__ = ["SIMULATORS", "Server", "Simulator", "Stack"]
