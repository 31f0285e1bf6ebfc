"""The reports of a run: a summary for the terminal, JUnit XML for CI, JSON for programs, and
one HTML page for people (each case, its verdict, what was sent and what came back with the
evidence decoded, and the profile text it checks).

Takes the results and what was run against; writes files with the standard library only,
every outside text escaped (a target's reply or evidence is shown, never interpreted).
"""

from __future__ import annotations

import datetime as dt
import html
import json
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.runner import ERROR, FAIL, PASS, SKIP, CaseResult

SUITE = "kep-relay conformance suite (INTEROP-PROFILE.md v1.1)"


@dataclass(frozen=True, slots=True)
class RunInfo:
    mode: str
    target: str
    target_provider: str
    as_provider: str
    started: dt.datetime
    finished: dt.datetime


def passed(results: list[CaseResult]) -> bool:
    """Exit 0 only when every required case passes."""
    return not any(r.counts_against for r in results)


def summary(results: list[CaseResult]) -> str:
    counts = Counter(r.verdict for r in results)
    against = sum(1 for r in results if r.counts_against)
    return (
        f"{counts[PASS]} passed, {counts[FAIL]} failed, {counts[ERROR]} errors, "
        f"{counts[SKIP]} skipped; {against} required case(s) not passed: "
        + ("CONFORMANT" if passed(results) else "NOT CONFORMANT")
    )


def terminal_line(result: CaseResult) -> str:
    mark = result.verdict.upper() + ("" if result.case.required else "?")
    line = f"{mark:<6} {result.case.id:<16} {result.case.title} ({result.seconds:.1f} s)"
    if result.verdict != PASS:
        line += f"\n       {result.detail}"
    return line


def as_json(info: RunInfo, results: list[CaseResult]) -> dict[str, Any]:
    return {
        "suite": SUITE,
        "mode": info.mode,
        "target": info.target,
        "target_provider": info.target_provider,
        "as_provider": info.as_provider,
        "started": info.started.isoformat(),
        "finished": info.finished.isoformat(),
        "conformant": passed(results),
        "summary": dict(Counter(r.verdict for r in results)),
        "cases": [
            {
                "id": r.case.id,
                "title": r.case.title,
                "section": r.case.section,
                "etsi": r.case.etsi,
                "required": r.case.required,
                "rule": r.case.rule,
                "verdict": r.verdict,
                "detail": r.detail,
                "seconds": round(r.seconds, 3),
                "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in r.checks],
                "exchanges": [
                    {
                        "direction": x.direction,
                        "title": x.title,
                        "smtp": x.smtp,
                        "headers": x.headers,
                        "evidence": x.evidence,
                        "size": x.size,
                    }
                    for x in r.records
                ],
            }
            for r in results
        ],
    }


def junit(info: RunInfo, results: list[CaseResult]) -> bytes:
    counts = Counter(r.verdict for r in results)
    suite = ET.Element(
        "testsuite",
        name="kep-conformance",
        tests=str(len(results)),
        failures=str(counts[FAIL]),
        errors=str(counts[ERROR]),
        skipped=str(counts[SKIP]),
        time=f"{sum(r.seconds for r in results):.3f}",
        timestamp=info.started.isoformat(),
        hostname=info.target,
    )
    properties = ET.SubElement(suite, "properties")
    for name, value in (
        ("mode", info.mode),
        ("target_provider", info.target_provider),
        ("as_provider", info.as_provider),
    ):
        ET.SubElement(properties, "property", name=name, value=value)
    for r in results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"conformance.{r.case.etsi}",
            name=f"{r.case.id} {r.case.title}",
            time=f"{r.seconds:.3f}",
        )
        kind = "required" if r.case.required else "optional"
        if r.verdict == FAIL:
            ET.SubElement(case, "failure", message=r.detail, type=kind).text = _checks_text(r)
        elif r.verdict == ERROR:
            ET.SubElement(case, "error", message=r.detail, type=kind).text = _checks_text(r)
        elif r.verdict == SKIP:
            ET.SubElement(case, "skipped", message=r.detail)
        ET.SubElement(
            case, "system-out"
        ).text = f"{r.case.section} ({r.case.etsi}): {r.case.rule}\n\n{_checks_text(r)}"
    root = ET.Element("testsuites")
    root.append(suite)
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


def _checks_text(result: CaseResult) -> str:
    return "\n".join(f"[{'ok' if c.ok else 'FAILED'}] {c.name}: {c.detail}" for c in result.checks)


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:80em;color:#222}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:.2em .5em;
text-align:left;vertical-align:top;font-size:.9em}.pass{color:#17692c}.fail,.error{color:#b00020}
.skip{color:#777}details{margin:.3em 0 .8em 0}pre{background:#f6f6f6;padding:.5em;
overflow-x:auto;font-size:.8em;white-space:pre-wrap}summary{cursor:pointer}
h2{font-size:1.1em;margin-top:1.5em}blockquote{margin:.3em 0;color:#444;font-style:italic}
"""


def page(info: RunInfo, results: list[CaseResult]) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td><a href='#{e(r.case.id)}'>{e(r.case.id)}</a></td><td>{e(r.case.title)}</td>"
        f"<td>{e(r.case.section)}</td><td>{e(r.case.etsi)}</td>"
        f"<td>{'required' if r.case.required else 'optional'}</td>"
        f"<td class='{e(r.verdict)}'>{e(r.verdict.upper())}</td></tr>"
        for r in results
    )
    sections = "".join(_case_html(r) for r in results)
    verdict = "CONFORMANT" if passed(results) else "NOT CONFORMANT"
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>KEP conformance: {e(info.target_provider)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>KEP conformance report: {e(info.target_provider)} at {e(info.target)}</h1>"
        f"<p>{e(SUITE)}. Mode <b>{e(info.mode)}</b>, the suite playing {e(info.as_provider)}; "
        f"{e(info.started.isoformat(timespec='seconds'))} to "
        f"{e(info.finished.isoformat(timespec='seconds'))}.</p>"
        f"<p><b class='{'pass' if passed(results) else 'fail'}'>{verdict}</b>: "
        f"{e(summary(results))}</p>"
        "<table><tr><th>id</th><th>case</th><th>profile</th><th>ETSI family</th>"
        f"<th></th><th>verdict</th></tr>{rows}</table>{sections}</body></html>\n"
    )


def _case_html(r: CaseResult) -> str:
    e = html.escape
    checks = "".join(
        f"<li class='{'pass' if c.ok else 'fail'}'>{'✓' if c.ok else '✗'} {e(c.name)}"
        f"{': ' + e(c.detail) if c.detail else ''}</li>"
        for c in r.checks
    )
    exchanges = "".join(
        f"<details><summary>{e(x.direction)}: {e(x.title)}"
        f"{f' ({x.size} bytes)' if x.size else ''}</summary>"
        + (f"<pre>{e(chr(10).join(x.smtp))}</pre>" if x.smtp else "")
        + (f"<p>Header fields</p><pre>{e(x.headers)}</pre>" if x.headers else "")
        + (f"<p>delil.xml, decoded</p><pre>{e(x.evidence)}</pre>" if x.evidence else "")
        + "</details>"
        for x in r.records
    )
    return (
        f"<h2 id='{e(r.case.id)}'>{e(r.case.id)}: {e(r.case.title)} "
        f"<span class='{e(r.verdict)}'>{e(r.verdict.upper())}</span></h2>"
        f"<p>{e(r.case.section)} · ETSI TR 103 071 {e(r.case.etsi)} · "
        f"{'required' if r.case.required else 'optional'} · {r.seconds:.1f} s</p>"
        f"<blockquote>{e(r.case.rule)}</blockquote><p>{e(r.detail)}</p>"
        f"<ul>{checks}</ul>{exchanges}"
    )


def write(folder: Path, info: RunInfo, results: list[CaseResult]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = {
        folder / "junit.xml": junit(info, results),
        folder / "report.json": (
            json.dumps(as_json(info, results), indent=2, ensure_ascii=False) + "\n"
        ).encode(),
        folder / "report.html": page(info, results).encode(),
    }
    for path, data in written.items():
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return list(written)
