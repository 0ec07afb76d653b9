"""docs/architecture.md names files and the functions in them; each must exist, so the doc
cannot quietly drift from the code it describes."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
# `path/to/file.py` `Name` or `Class.method`, as the doc writes each hop.
REFERENCE = re.compile(r"`([\w/]+\.py)`\s+`([\w.]+)`")


def defines(source: str, name: str) -> bool:
    return re.search(rf"^\s*(?:async\s+)?(?:def|class)\s+{name}\b|^{name}\s*[:=]", source,
                     re.MULTILINE) is not None


def test_every_file_and_function_the_doc_names_exists() -> None:
    references = REFERENCE.findall(DOC.read_text(encoding="utf-8"))
    assert len(references) > 20
    missing = []
    for path, name in references:
        file = ROOT / path
        if not file.exists():
            missing.append(path)
            continue
        source = file.read_text(encoding="utf-8")
        missing += [f"{path} {part}" for part in name.split(".") if not defines(source, part)]
    assert missing == []


def test_the_pipeline_steps_the_doc_names_exist() -> None:
    pipeline = (ROOT / "worker" / "pipeline.py").read_text(encoding="utf-8")
    steps = set(re.findall(r"`(_\w+)`", DOC.read_text(encoding="utf-8")))
    assert steps and all(defines(pipeline, step) for step in steps)
