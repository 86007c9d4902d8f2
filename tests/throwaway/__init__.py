"""A throw-away vendor, registered from the tests alone: connector, simulator and kit.

It proves that registering is all a vendor needs for the contract test, the README
generator and the demo's vendor list to pick it up. `install()` registers it, `uninstall()`
forgets it; `-p tests.throwaway.plugin` installs it for a whole pytest process.
"""

from __future__ import annotations

from syncd.sandbox import SIMULATORS
from syncd.vendors import REGISTRY, register
from tests.kits import KITS
from tests.throwaway.connector import Throwaway
from tests.throwaway.kit import KIT
from tests.throwaway.simulator import ThrowawaySim

__all__ = ["KIT", "NAME", "Throwaway", "ThrowawaySim", "install", "uninstall"]

NAME = "throwaway"


def install(*, kit: bool = True) -> None:
    """Register the connector and the simulator, and the kit unless `kit` is false."""
    register(Throwaway)
    SIMULATORS[NAME] = ThrowawaySim
    if kit:
        KITS[NAME] = KIT


def uninstall() -> None:
    for registry in (REGISTRY, SIMULATORS, KITS):
        registry.pop(NAME, None)
