"""The registry is the one list of vendors: a vendor registered from the tests alone (the
throw-away one in tests/throwaway) reaches the contract test, the README and the demo."""

from __future__ import annotations

import inspect
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.demo import vendors_available
from syncd.sandbox import SIMULATORS
from syncd.vendors import REGISTRY, register
from tests import throwaway
from tests.test_readme import vendor_reference
from tests.vendors import test_contract

ROOT = Path(__file__).parent.parent


@pytest.fixture
def registered() -> Iterator[None]:
    throwaway.install()
    yield
    throwaway.uninstall()


def test_every_vendor_has_a_title_and_a_simulator_of_the_same_name() -> None:
    assert all(cls.title for cls in REGISTRY.values())
    assert set(SIMULATORS) == set(REGISTRY)
    assert all(sim.name == name for name, sim in SIMULATORS.items())


def test_a_name_is_registered_once(registered: None) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register(throwaway.Throwaway)


def test_the_readme_generator_documents_a_registered_vendor(registered: None) -> None:
    assert "#### Throw-away — `[vendors.throwaway]`, upsert" in vendor_reference()


def test_the_demo_lists_a_registered_vendor(registered: None) -> None:
    assert vendors_available()[-1] == "throwaway"


def test_a_registered_vendor_without_a_kit_fails_the_contract() -> None:
    code = (
        "from tests import throwaway; throwaway.install(kit=False); "
        "import tests.vendors.test_contract"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0
    assert "'throwaway' is registered but has no kit: write tests/kits/throwaway.py" in proc.stderr


def test_the_contract_test_runs_against_a_registered_vendor() -> None:
    """The whole contract, in a pytest of its own with the vendor registered by a plugin."""
    contract = [
        name
        for name, test in vars(test_contract).items()
        if name.startswith("test_") and "kit" in inspect.signature(test).parameters
    ]
    args = ["-p", "tests.throwaway.plugin", "tests/vendors/test_contract.py", "-k", "throwaway"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(contract)} passed" in proc.stdout, proc.stdout
