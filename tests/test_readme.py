"""The README's vendor reference and reliability table are generated from the code they
describe; these tests fail with the up-to-date text when either drifts.

Regenerate them in README.md with `python -m tests.test_readme`."""

from __future__ import annotations

import re
from pathlib import Path

from syncd.vendors import REGISTRY, Connector
from tests.test_faults import readme_table

README = Path(__file__).parent.parent / "README.md"
ORDER = ("esputnik", "signalvine", "hellocustomer", "dropthought", "altcraft")
TITLES = {
    "esputnik": "eSputnik",
    "signalvine": "SignalVine",
    "hellocustomer": "Hello Customer",
    "dropthought": "Dropthought",
    "altcraft": "Altcraft",
}


def _default(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value!r}`"


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
        f"#### {TITLES[cls.name]} — `[vendors.{cls.name}]`, {cls.kind}",
        "",
        summary,
        "",
        f"Limits: {'; '.join(limits)}. Pull streams: {streams}.",
        "",
        "| key | default | meaning |",
        "|---|---|---|",
        "| `base_url` | | the API's scheme://host[:port] |",
        f"| `mapping` | | the mapping file (example: `syncd/mappings/{cls.name}.toml`) |",
        f"| `batch_size` | `{cls.max_batch}` | contacts a request, at most {cls.max_batch} |",
    ]
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
    assert set(ORDER) == set(REGISTRY)
    return "\n".join(vendor_section(REGISTRY[name]) for name in ORDER)


def block(name: str) -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"<!-- {name} -->\n(.*)<!-- /{name} -->", text, re.S)
    assert match, f"README.md lacks its <!-- {name} --> block"
    return match.group(1).strip()


def test_the_vendor_reference_matches_the_connectors() -> None:
    assert block("VENDORS") == vendor_reference().strip(), "stale: run python -m tests.test_readme"


def test_the_reliability_table_matches_the_fault_matrix() -> None:
    assert block("FAULTS") == readme_table().strip(), "stale: run python -m tests.test_readme"


def regenerate() -> None:
    text = README.read_text(encoding="utf-8")
    for name, body in (("VENDORS", vendor_reference()), ("FAULTS", readme_table())):
        text = re.sub(
            rf"(<!-- {name} -->\n).*(<!-- /{name} -->)",
            lambda m, body=body: f"{m.group(1)}{body.strip()}\n{m.group(2)}",
            text,
            flags=re.S,
        )
    README.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    regenerate()
    print(f"regenerated the VENDORS and FAULTS blocks in {README}")
