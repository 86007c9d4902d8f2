"""Faithful local simulators of the five vendors, served over real HTTP on loopback.

Each is written from the vendor's own documents and imports nothing from `syncd.vendors`.
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
