"""The coverage table of docs/theory.md is the one generated from the certificate registry."""

from __future__ import annotations

import re
from pathlib import Path

from fibration_theory.proofs import coverage
from fibration_theory.proofs.registry import load_all

DOC = Path(__file__).resolve().parents[1] / "docs" / "theory.md"


def test_docs_carry_the_generated_table():
    text = DOC.read_text()
    block = text[text.index(coverage.BEGIN) + len(coverage.BEGIN):text.index(coverage.END)]
    assert block.strip() == coverage.coverage_markdown().strip(), \
        "regenerate with `fibration verify --coverage`"
    assert text.index(coverage.BEGIN) < text.index("## Overview")  # the doc opens with it


def test_all_55_numbered_statements_once():
    numbers = [s.number for s in coverage.STATEMENTS]
    assert len(numbers) == len(set(numbers)) == 55
    main = [n for n in numbers if re.search(r" \d", n)]
    assert len(main) == 24 and len(numbers) - len(main) == 31


def test_every_certificate_covers_a_statement():
    named = {c for s in coverage.STATEMENTS for c in s.certs}
    for cert in load_all().values():
        assert cert.id in named or cert.name in named, cert.name


def test_rows_without_certificate_say_why():
    for st, row in zip(coverage.STATEMENTS, coverage.coverage_rows()):
        if row[3] == "-":
            assert st.note, st.number
