"""One contract, every vendor: each connector against its simulator over loopback HTTP,
through the same delivery loop the pipeline uses (a real SQLite store)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from syncd.clock import FakeClock
from syncd.config import load
from syncd.errors import AuthError, EndpointError, VendorError
from syncd.push import Deliverer
from syncd.sandbox.base import Server, Simulator
from syncd.state import Store
from syncd.vendors import REGISTRY, Connector, Contact
from tests.kits import Kit, kit_for

# every registered vendor's kit: one without a kit stops the collection (LookupError
# naming the file to write), it is never skipped
KITS = [kit_for(name) for name in REGISTRY]


@pytest.fixture(params=KITS, ids=[k.name for k in KITS])
def kit(request: pytest.FixtureRequest) -> Kit:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def served(kit: Kit) -> Iterator[tuple[Simulator, Server]]:
    sim = kit.simulator()
    with Server(sim) as server:
        yield sim, server


def make_connector(
    kit: Kit,
    url: str,
    folder: Path,
    *,
    bad_secret: bool = False,
    extra: str = "",
    read_timeout: float = 5.0,
) -> Connector:
    (folder / "mapping.toml").write_text(kit.mapping_toml, encoding="utf-8")
    (folder / "syncd.toml").write_text(
        f'[source]\npath = "x.csv"\nkey = "Record ID"\n[store]\npath = "s.db"\n'
        f"[vendors.{kit.name}]\n{kit.vendor_toml(url, bad_secret)}"
        f"retries = 2\nbackoff_base = 0.01\nread_timeout = {read_timeout}\n"
        f"connect_timeout = 2\n{extra}",
        encoding="utf-8",
    )
    cfg = load(folder / "syncd.toml")
    return REGISTRY[kit.name](cfg.vendors[kit.name], clock=FakeClock(datetime.now(UTC)))


def deliver(
    connector: Connector, contacts: list[Contact], folder: Path
) -> tuple[dict[str, tuple[str, str | None]], Deliverer]:
    """Queue the contacts as pending deliveries and run the delivery loop over them."""
    store = Store.open(folder / "s.db")
    now = datetime.now(UTC)
    run = store.start_run("test", now)
    with store.write() as c:
        for contact in contacts:
            payload = json.dumps(
                {"fields": dict(contact.fields), "metadata": dict(contact.metadata)}
            )
            c.execute(
                "INSERT INTO deliveries (run_id, vendor, key, kind, status, hash, payload, "
                "created_at, updated_at) VALUES (?, ?, ?, 'new', 'pending', 'h', ?, ?, ?)",
                (run, connector.name, contact.key, payload, now.isoformat(), now.isoformat()),
            )
    deliverer = Deliverer(store, connector, lambda: now, max_attempts=3)
    deliverer.run()
    rows = store.query("SELECT key, status, reason FROM deliveries")
    store.close()
    return {r["key"]: (r["status"], r["reason"]) for r in rows}, deliverer


def test_a_batch_is_sent_and_held(
    kit: Kit, served: tuple[Simulator, Server], tmp_path: Path
) -> None:
    sim, server = served
    connector = make_connector(kit, server.url, tmp_path)
    contacts = [kit.contact(i) for i in range(5)]
    outcome, _ = deliver(connector, contacts, tmp_path)
    assert {k: s for k, (s, _r) in outcome.items()} == {c.key: "sent" for c in contacts}
    assert set(kit.held(sim)) >= {c.key for c in contacts}
    if kit.triggers:
        assert all(kit.triggers(sim)[c.key] == 1 for c in contacts)


def test_a_rejected_contact_fails_with_the_vendor_reason(
    kit: Kit, served: tuple[Simulator, Server], tmp_path: Path
) -> None:
    sim, server = served
    assert kit.reject is not None
    connector = make_connector(kit, server.url, tmp_path)
    contacts = [kit.contact(i) for i in range(4)]
    kit.reject(sim, contacts[2], "blocked by the contract test")
    outcome, _ = deliver(connector, contacts, tmp_path)
    status, reason = outcome[contacts[2].key]
    assert status == "failed"
    assert reason and "blocked by the contract test" in reason
    assert all(outcome[c.key][0] == "sent" for c in contacts if c is not contacts[2])
    assert contacts[2].key not in kit.held(sim)


def test_a_503_is_retried(kit: Kit, served: tuple[Simulator, Server], tmp_path: Path) -> None:
    sim, server = served
    connector = make_connector(kit, server.url, tmp_path)
    # with Retry-After the vendor says it did not act: a trigger is retried too
    sim.faults.add("status", status=503, retry_after="1", count=1, path=kit.push_path)
    contacts = [kit.contact(i) for i in range(3)]
    outcome, _ = deliver(connector, contacts, tmp_path)
    assert all(s == "sent" for s, _r in outcome.values())


def test_a_429_with_retry_after_is_honoured(
    kit: Kit, served: tuple[Simulator, Server], tmp_path: Path
) -> None:
    sim, server = served
    connector = make_connector(kit, server.url, tmp_path)
    sim.faults.add("status", status=429, retry_after="3", count=1, path=kit.push_path)
    outcome, _ = deliver(connector, [kit.contact(1)], tmp_path)
    assert all(s == "sent" for s, _r in outcome.values())
    assert isinstance(connector.clock, FakeClock)
    assert 3.0 in connector.clock.slept


def test_a_vendor_that_stays_down_leaves_everything_pending(
    kit: Kit, served: tuple[Simulator, Server], tmp_path: Path
) -> None:
    sim, server = served
    connector = make_connector(kit, server.url, tmp_path)
    sim.faults.add("down", status=503, retry_after="1")
    contacts = [kit.contact(i) for i in range(3)]
    outcome, deliverer = deliver(connector, contacts, tmp_path)
    assert {s for s, _r in outcome.values()} == {"pending"}
    assert deliverer.out.counts["sent"] == 0


def test_a_read_timeout_never_resends_a_trigger(
    kit: Kit, served: tuple[Simulator, Server], tmp_path: Path
) -> None:
    sim, server = served
    connector = make_connector(kit, server.url, tmp_path, read_timeout=0.5)
    sim.faults.add("delay", seconds=1.2, count=1, path=kit.push_path)
    contact = kit.contact(7)
    outcome, _ = deliver(connector, [contact], tmp_path)
    status, _reason = outcome[contact.key]
    if kit.kind == "trigger":
        assert status == "unknown"
        assert kit.triggers is not None
        assert kit.triggers(sim).get(contact.key) == 1
    else:
        assert status in ("sent", "pending")


def test_bad_credentials_raise_auth_error(
    kit: Kit, served: tuple[Simulator, Server], tmp_path: Path
) -> None:
    _sim, server = served
    connector = make_connector(kit, server.url, tmp_path, bad_secret=True)
    with pytest.raises(AuthError) as caught:
        connector.push([kit.contact(1)], lambda job: None)
    # it names what to check, not "the vendor's credentials"
    assert "check" in str(caught.value) and "vendor's credentials" not in str(caught.value)


def test_the_online_check_proves_good_credentials_and_names_the_vendor_on_bad_ones(
    kit: Kit, served: tuple[Simulator, Server], tmp_path: Path
) -> None:
    """Every vendor has a read-only call; a wrong credential fails it, naming the vendor."""
    _sim, server = served
    proven = make_connector(kit, server.url, tmp_path).check()
    assert proven, f"{kit.name} has no read-only call for `syncd check --online`"
    with pytest.raises(VendorError) as err:
        make_connector(kit, server.url, tmp_path, bad_secret=True).check()
    assert err.value.vendor == kit.name


def test_a_404_on_the_online_check_names_only_the_options_in_its_url(
    kit: Kit, served: tuple[Simulator, Server], tmp_path: Path
) -> None:
    """Each call's hint names what is in its URL: Dropthought's login 404 named
    participant_group, which only the participant call carries, so an operator chased the
    group when base_url was wrong."""
    sim, server = served
    connector = make_connector(kit, server.url, tmp_path)
    sim.faults.add("down", status=404)
    with pytest.raises(EndpointError) as caught:
        connector.check()
    text = str(caught.value)
    path = text.split(" answered HTTP ", 1)[0].rsplit(" ", 1)[-1].lower()
    assert path.startswith("/") and "base_url" in text
    for key in connector.url_options:
        named = f"{key} in [vendors.{kit.name}]" in text or f"and {key}" in text
        assert named == (str(connector.opts[key]).lower() in path), (key, path, text)


def test_batches_respect_the_configured_size(kit: Kit, tmp_path: Path) -> None:
    connector = make_connector(kit, "http://127.0.0.1:9", tmp_path, extra="batch_size = 1\n")
    contacts = [kit.contact(i) for i in range(5)]
    batches = list(connector.batches(contacts))
    assert [len(b) for b in batches] == [1] * 5
    assert [c.key for b in batches for c in b] == [c.key for c in contacts]


def test_several_batches_are_each_sent_once_and_held(
    kit: Kit, served: tuple[Simulator, Server], tmp_path: Path
) -> None:
    """However a connector drives its batches (one at a time, or several async jobs open
    at once), each one is sent once and every contact is acknowledged."""
    sim, server = served
    size = min(2, REGISTRY[kit.name].max_batch)
    connector = make_connector(kit, server.url, tmp_path, extra=f"batch_size = {size}\n")
    contacts = [kit.contact(i) for i in range(7)]
    outcome, deliverer = deliver(connector, contacts, tmp_path)
    assert {k: s for k, (s, _r) in outcome.items()} == {c.key: "sent" for c in contacts}
    assert deliverer.out.counts == {"sent": 7}
    assert set(kit.held(sim)) >= {c.key for c in contacts}
    assert sim.count(kit.push_path) == -(-7 // size)  # no batch went twice
    if kit.triggers:
        assert all(kit.triggers(sim)[c.key] == 1 for c in contacts)


def test_a_404_names_what_to_check_for_this_vendor(
    kit: Kit, served: tuple[Simulator, Server], tmp_path: Path
) -> None:
    """A 404 hinted at "the vendor's path options" for every vendor, most of which have
    none: the hint names base_url and the options that go into this vendor's URLs."""
    sim, server = served
    connector = make_connector(kit, server.url, tmp_path)
    sim.faults.add("status", status=404, path=kit.push_path)
    with pytest.raises(EndpointError) as caught:
        connector.push([kit.contact(1)], lambda job, refused=(): None)
    text = str(caught.value)
    assert "base_url" in text and "path options" not in text
    for key in connector.url_options:
        assert key in connector.options
        assert f"{key} in [vendors.{kit.name}]" in text or f"and {key}" in text
