"""The README's vendor reference, reliability table and schema are generated from the code
they describe; these tests fail with the up-to-date text when one drifts (the schema's test
is in test_analyst).

Regenerate them in README.md with `python -m tests.test_readme`."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

from syncd.analyst import markdown
from syncd.config import DeliveryConfig
from syncd.http import MAX_ANSWER, OUTCOMES
from syncd.vendors import REGISTRY, Connector
from tests.test_faults import readme_table

README = Path(__file__).parent.parent / "README.md"


def _default(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value!r}`"


def default_batch(cls: type[Connector]) -> int:
    """The batch a connector sends with no `batch_size` set: its `batch_size` property read
    without one (Hello Customer's is 100, not its maximum of 1000: each split of a refused
    batch costs a second of pacing)."""
    unset = SimpleNamespace(config=SimpleNamespace(batch_size=None), max_batch=cls.max_batch)
    return int(cls.batch_size.fget(unset))  # type: ignore[attr-defined]


def vendor_section(cls: type[Connector]) -> str:
    doc = (cls.__module__ and __import__(cls.__module__, fromlist=["_"]).__doc__) or ""
    summary = doc.strip().split("\n\n")[0].replace("\n", " ")
    assumptions = doc.split("Assumptions", 1)[1].split(":", 1)[1] if "Assumptions" in doc else ""
    limits = [f"{cls.max_batch} contacts a request"]
    if cls.max_bytes:
        limits.append(f"{cls.max_bytes:,} bytes a request")
    if cls.min_interval:
        limits.append(f"one call per {cls.min_interval:g} s per token")
    streams = ", ".join(cls.streams) or "none"
    lines = [
        f"#### {cls.title} — `[vendors.{cls.name}]`, {cls.kind}",
        "",
        summary,
        "",
        f"Limits: {'; '.join(limits)}. Pull streams: {streams}.",
        "",
        "| key | default | meaning |",
        "|---|---|---|",
        "| `base_url` | | the API's scheme://host[:port] |",
        f"| `mapping` | | the mapping file (example: `syncd/mappings/{cls.name}.toml`) |",
        f"| `batch_size` | `{default_batch(cls)}` | contacts a request, at most {cls.max_batch} |",
    ]
    if cls.streams:
        quoted = ", ".join(f'"{s}"' for s in cls.streams)
        lines.append(
            f"| `streams` | `[{quoted}]` | the pull streams to read; leave out one the account "
            "does not have |"
        )
    for key, opt in cls.options.items():
        meaning = opt.help or ""
        if opt.choices:
            meaning = (meaning + "; " if meaning else "") + " \\| ".join(
                f"`{c}`" for c in opt.choices
            )
        if opt.secret:
            meaning += " (a secret: literal, `env:`, `file:` or `credential:`)"
        if opt.required:
            meaning = "**required** " + meaning
        lines.append(f"| `{key}` | {_default(opt.default)} | {meaning.strip()} |")
    lines.append("")
    if assumptions:
        lines += [
            "Assumed where the vendor's documents are silent: " + " ".join(assumptions.split()),
            "",
        ]
    return "\n".join(lines)


def vendor_reference() -> str:
    """Every registered vendor's section, in the registry's order."""
    return "\n".join(vendor_section(cls) for cls in REGISTRY.values())


def _marked(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- {name} -->\n)(.*)(<!-- /{name} -->)", re.S)


def block(name: str) -> str:
    """The README's text between `<!-- name -->` and `<!-- /name -->`, stripped."""
    match = _marked(name).search(README.read_text(encoding="utf-8"))
    assert match, f"README.md lacks its <!-- {name} --> block"
    return match.group(2).strip()


def outcome_table() -> str:
    """`syncd.http.OUTCOMES` as the README shows it."""
    words = {
        "retry": "retried, then pending",
        "unknown": "**unknown**, never re-sent on its own",
        "auth": "credentials refused: pending, vendor stopped",
        "endpoint": "configuration: pending, vendor stopped",
        "refused": "refused: the row fails (a batch is split)",
        "answer": "read by the connector against the documented acknowledgement",
    }
    rows = ["| answer | idempotent call (read, poll, upsert) | trigger |", "|---|---|---|"]
    rows += [f"| {case} | {words[up]} | {words[tr]} |" for case, (up, tr) in OUTCOMES.items()]
    rows.append(
        f"\nEvery answer is read under a {MAX_ANSWER // 2**20} MiB cap and every request "
        "under `request_deadline` (default "
        f"{DeliveryConfig().request_deadline:g} s, also cut at once by a stop request)."
    )
    return "\n".join(rows)


def generated() -> dict[str, str]:
    """Every generated README block, by marker name."""
    return {
        "VENDORS": vendor_reference(),
        "OUTCOMES": outcome_table(),
        "FAULTS": readme_table(),
        "SCHEMA": markdown(),
    }


def test_the_vendor_reference_matches_the_connectors() -> None:
    assert block("VENDORS") == vendor_reference().strip(), "stale: run python -m tests.test_readme"


def test_the_outcome_table_matches_the_http_client() -> None:
    assert block("OUTCOMES") == outcome_table().strip(), "stale: run python -m tests.test_readme"


def test_the_reliability_table_matches_the_fault_matrix() -> None:
    assert block("FAULTS") == readme_table().strip(), "stale: run python -m tests.test_readme"


def regenerate() -> list[str]:
    """Rewrite the stale generated blocks in README.md; the names of those rewritten."""
    text = README.read_text(encoding="utf-8")
    stale = [name for name, body in generated().items() if block(name) != body.strip()]
    for name in stale:
        body = generated()[name].strip()
        text = _marked(name).sub(lambda m, body=body: f"{m[1]}{body}\n{m[3]}", text)
    README.write_text(text, encoding="utf-8")
    return stale


if __name__ == "__main__":
    print(f"rewrote {', '.join(regenerate()) or 'nothing: every block is current'} in {README}")
