"""`make notebooks` (rlhf_nb.tools.notebooks): only the course's notebooks, by name, refused in one line otherwise."""
from __future__ import annotations

import pytest

from rlhf_nb.tools import notebooks as tool


@pytest.mark.parametrize("name", ["99_nope", "../../etc/passwd", "00_smoke.ipynb/../../README.md", ""])
def test_a_name_that_is_not_a_lesson_is_refused_before_anything_runs(name, monkeypatch, capsys):
    ran = []
    monkeypatch.setattr(tool, "execute", lambda path, timeout=600: ran.append(path) or 0.0)
    with pytest.raises(SystemExit) as e:
        tool.main([name])
    assert e.value.code == 2 and "no notebook" in capsys.readouterr().err and ran == []


def test_names_with_or_without_the_suffix_pick_the_lessons_in_the_order_given(monkeypatch):
    ran = []
    monkeypatch.setattr(tool, "execute", lambda path, timeout=600: ran.append(path) or 0.0)
    assert tool.main(["06_training_loop", "00_smoke.ipynb"]) == 0
    assert [p.name for p in ran] == ["06_training_loop.ipynb", "00_smoke.ipynb"]
    assert all(p.parent == tool.NB_DIR for p in ran)
    ran.clear()
    tool.main([])
    assert [p.name for p in ran] == [p.name for p in tool.notebooks()] and len(ran) >= 11


def test_a_bad_timeout_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        tool.main(["--timeout", "0", "00_smoke"])
    assert e.value.code == 2 and "--timeout must be in [1, 86400], got 0" in capsys.readouterr().err
