"""The command line as an adversarial operator writes it: every mistake one clear line and
exit 2, never a traceback, never a different installation's config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from syncd.errors import SyncdError
from syncd.init import init
from tests.helpers import run_syncd


@pytest.mark.parametrize("how", ["--config=", "SYNCD_CONFIG"])
def test_an_empty_config_option_is_refused_not_replaced_by_the_default(
    tmp_path: Path, how: str
) -> None:
    """`syncd --config "$CONF" sync` with $CONF unset read ./syncd.toml (or $SYNCD_CONFIG):
    another installation's config, vendors and store, and it went on with them."""
    (tmp_path / "syncd.toml").write_text("[source\n", encoding="utf-8")  # must not be read
    if how == "--config=":
        done = run_syncd(tmp_path, "--config=", "check", SYNCD_CONFIG=str(tmp_path / "syncd.toml"))
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("syncd: --config is empty"), done.stderr
        assert "not valid TOML" not in done.stderr
    else:  # an empty variable is an unset one, as everywhere
        done = run_syncd(tmp_path, "check", SYNCD_CONFIG="")
        assert "syncd.toml: not valid TOML" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_init_refuses_an_export_whose_name_a_toml_file_cannot_hold(tmp_path: Path) -> None:
    """A file name that is not UTF-8 (a Latin-1 `contacts-é.csv` copied from a Windows share)
    was a UnicodeEncodeError traceback: TOML is UTF-8, so no config can name it."""
    export = Path(os.fsdecode(bytes(tmp_path) + b"/contacts-\xe9.csv"))
    export.write_text("Record ID,Email\n1,a@b.co\n", encoding="utf-8")
    with pytest.raises(SyncdError) as err:
        init(export, ["esputnik"], tmp_path, echo=lambda _line: None)
    assert str(err.value).startswith(
        f"export {str(os.fsencode(export))[2:-1]}: its name is not UTF-8, and a TOML config can "
        "name only UTF-8 paths; nothing was written"
    ), str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == [export.name]


@pytest.mark.parametrize(
    ("encoding", "message"),
    [("bogus", "unknown encoding 'bogus'"), ("rot13", "'rot13' is not a text encoding")],
)
def test_init_refuses_an_encoding_that_is_none(tmp_path: Path, encoding: str, message: str) -> None:
    """`syncd init --encoding bogus` was a LookupError traceback."""
    (tmp_path / "c.csv").write_text("Record ID,Email\n1,a@b.co\n", encoding="utf-8")
    done = run_syncd(tmp_path, "init", "c.csv", "--vendors", "esputnik", "--encoding", encoding)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"syncd: --encoding: {message}"), done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.csv"]


def test_init_on_a_directory_says_so(tmp_path: Path) -> None:
    """`syncd init exports/` (the folder, not the file in it) was an IsADirectoryError
    traceback: os.fdopen refuses a directory before Export could say what it is."""
    (tmp_path / "exports").mkdir()
    done = run_syncd(tmp_path, "init", "exports", "--vendors", "esputnik")
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("syncd: export exports is a directory, not a regular file"), (
        done.stderr
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exports"]
