"""The code fingerprint recorded in results.json: the modules an experiment imports, transitively, hashed blind to
comments, docstrings and layout (issue 9: a check that fails when a committed result was made by older code)."""

from __future__ import annotations

import json
import textwrap

import pytest

from experiments import source_hash


@pytest.fixture
def fake_repository(tmp_path, monkeypatch):
    def write(relative: str, text: str) -> None:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))

    write("theory/__init__.py", '"""The mathematics."""\n')
    write("theory/formula.py", '''
        """A formula."""
        SCALE = 2.0  # why two


        def formula(x):
            """Doubled."""
            return SCALE * x
    ''')
    write("theory/unused.py", "VALUE = 1\n")
    write("experiments/__init__.py", "from experiments import registry\n")
    write("experiments/registry.py", "CATALOGUE = {}\n")
    write("experiments/fake.py", '''
        import numpy as np


        def run():
            from theory.formula import formula  # a function-level import counts too

            return formula(np.ones(2))
    ''')
    monkeypatch.setattr(source_hash, "REPOSITORY", tmp_path)
    return write


def test_the_fingerprint_follows_imports_and_ignores_bookkeeping(fake_repository):
    modules = source_hash.module_hashes("experiments.fake")
    assert sorted(modules) == ["experiments.fake", "theory", "theory.formula"]  # not numpy, registry or unused


def test_comments_docstrings_and_layout_do_not_change_the_fingerprint_code_does(fake_repository):
    before = source_hash.module_hashes("experiments.fake")
    fake_repository("theory/formula.py", '''
        """A formula, described at more length."""
        # a new comment
        SCALE = 2.0


        def formula(x):
            return SCALE * (
                x
            )
    ''')
    assert source_hash.module_hashes("experiments.fake") == before
    fake_repository("theory/formula.py", '''
        SCALE = 2.5


        def formula(x):
            return SCALE * x
    ''')
    after = source_hash.module_hashes("experiments.fake")
    assert after["theory.formula"] != before["theory.formula"]
    assert after["experiments.fake"] == before["experiments.fake"]


def test_every_result_records_the_fingerprint_of_its_code(tmp_path):
    import experiments

    payload = experiments.run("ot-targets", quick=True, out=tmp_path)
    written = json.loads((tmp_path / "ot-targets" / "results.json").read_text())
    assert written["source"] == payload["source"] == source_hash.experiment_source("ot-targets")
    assert {"experiments.ot_targets", "theory.optimal_transport", "experiments.experiment"} <= set(
        written["source"]["modules"])
    assert "experiments.runner" not in written["source"]["modules"]
