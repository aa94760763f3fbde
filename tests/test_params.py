"""Boolean notebook parameters survive plain papermill's text values."""
from __future__ import annotations

import ast

import nbformat
import pytest

from fifa_lab.params import flag
from fifa_lab.pipeline import NOTEBOOK_DIR, NOTEBOOKS


@pytest.mark.parametrize(("value", "expected"), [
    (True, True), (False, False), (1, True), (0, False),
    ("false", False), ("False", False), ("no", False), ("0", False), ("", False),
    ("true", True), ("True", True), (" yes ", True), ("1", True),
])
def test_flag_reads_booleans_and_their_spellings(value: object, expected: bool) -> None:
    assert flag(value, "solutions") is expected


@pytest.mark.parametrize("value", ["maybe", 2, 0.5, None, [True]])
def test_flag_rejects_what_is_not_a_boolean_and_names_the_parameter(value: object) -> None:
    with pytest.raises(ValueError, match="parameter lora must be true or false"):
        flag(value, "lora")


@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_every_boolean_notebook_parameter_goes_through_flag(stem: str) -> None:
    nb = nbformat.read(NOTEBOOK_DIR / f"{stem}.ipynb", as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    booleans = [s.targets[0].id for s in ast.parse(nb.cells[index].source).body
                if isinstance(s, ast.Assign) and isinstance(s.value, ast.Constant) and isinstance(s.value.value, bool)]
    setup = next(c for c in nb.cells[index + 1:] if c.cell_type == "code").source
    for name in booleans:
        assert f'{name} = flag({name}, "{name}")' in setup, f"{stem}: {name} is not read through flag()"
