"""eSputnik's HTTP Basic auth: the API key is the password, and what cannot go in the
header is refused at load, naming the key's table and the character, never the key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from syncd.config import load
from syncd.errors import ConfigError
from tests.helpers import World, esputnik_table


@pytest.mark.parametrize("pasted", ["\u200b", "\u00a0", "\u2013", "\x07"])
def test_a_key_holding_what_no_basic_header_carries_is_refused_at_load(
    tmp_path: Path, pasted: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key copied from a web page with a zero-width space, a no-break space or an en
    dash in it loaded, and every call then raised a bare UnicodeEncodeError from
    requests' Basic header ('latin-1' codec can't encode ...), naming neither the vendor
    nor the key; a control character went out and was a 401 at night."""
    secret = f"sandbox{pasted}key"
    monkeypatch.setenv("SYNCD_TEST_ESPUTNIK_KEY", secret)
    body, mapping = esputnik_table("http://127.0.0.1:9")
    body = body.replace('api_key = "sandbox-key"', 'api_key = "env:SYNCD_TEST_ESPUTNIK_KEY"')
    world = World(tmp_path, {"esputnik": (body, mapping)})
    with pytest.raises(ConfigError) as caught:
        load(world.folder / "syncd.toml")
    text = str(caught.value)
    assert "api_key" in text and f"U+{ord(pasted):04X}" in text, text
    assert secret not in text and "sandbox" not in text
    assert os.environ["SYNCD_TEST_ESPUTNIK_KEY"] == secret
