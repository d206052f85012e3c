"""nbval skips images, so the kit stores a hash of each figure's data as its text/plain (`start()` registers it) and
nbval compares that: a changed or swapped plot fails. Unit tests of the hash, then the mechanism end to end."""
from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from rlhf_nb.course.plots import figure_fingerprint, figure_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SANITIZE = ROOT / "tests" / "nbval_sanitize.cfg"


def _figure(y=(1.0, 2.0, 3.0), figsize=(7, 3.2), dpi=90, title="t", bars=(1.0, 2.0), point=(1.0, 1.0),
            pixel=1.0, ticks=("p", "q"), labels=("a", "b")):
    fig, (a, b) = plt.subplots(1, 2, figsize=figsize, dpi=dpi)
    a.plot([0, 1, 2], list(y), label=labels[0])
    a.plot([0, 1, 2], [3, 2, 1], label=labels[1])
    a.fill_between([0, 1, 2], [0, 1, 2], [1, 2, 3], alpha=0.2)
    a.legend()
    a.set_title(title)
    b.bar(["x", "y"], list(bars))
    b.scatter([point[0]], [point[1]])
    b.hist([1, 2, 2, 3], bins=3)
    b.imshow(np.array([[pixel, 0.0], [0.0, 1.0]]))
    b.set_xticks([0, 1], list(ticks))
    return fig


def _fp(**kw) -> str:
    fig = _figure(**kw)
    try:
        return figure_fingerprint(fig)
    finally:
        plt.close(fig)


def test_same_data_same_hash_at_any_size_or_dpi():
    base = _fp()
    assert re.fullmatch(r"[0-9a-f]{12}", base)
    assert _fp() == base
    assert _fp(figsize=(12, 6), dpi=200) == base  # what is drawn, not how big
    assert _fp(y=(1.0 + 1e-9, 2.0, 3.0)) == base  # float noise below 6 significant digits
    assert _fp(y=(-0.0, 2.0, 3.0)) == _fp(y=(0.0, 2.0, 3.0))


@pytest.mark.parametrize("change", [
    {"y": (1.0, 2.0, 3.001)},          # a moved point on a line
    {"y": (3.0, 2.0, 1.0)},            # the two lines swapped
    {"title": "u"},
    {"bars": (1.0, 2.5)},              # a bar's height
    {"point": (1.0, 1.5)},             # a scatter point
    {"pixel": 0.5},                    # an image pixel
    {"ticks": ("p", "r")},             # a hand-set tick label
    {"labels": ("b", "a")},            # legend texts
])
def test_a_changed_plot_changes_the_hash(change):
    assert _fp(**change) != _fp()


def test_wall_clock_x_is_not_hashed_on_a_timing_axes():
    """Lesson 07 plots reward against wall seconds, which change every run: plot_comparison marks that column."""
    from rlhf_nb.course.plots import plot_comparison

    def fp(elapsed, reward):
        rows = [{"step": i + 1, "reward": r, "kl_seq": 0.1 * i, "elapsed_s": t} for i, (t, r) in enumerate(zip(elapsed, reward))]
        fig = plot_comparison({"a": rows})
        try:
            return figure_fingerprint(fig)
        finally:
            plt.close(fig)

    base = fp([1.0, 2.0, 3.0], [0.1, 0.2, 0.3])
    assert fp([1.3, 2.9, 4.4], [0.1, 0.2, 0.3]) == base  # another run's clock
    assert fp([1.0, 2.0, 3.0], [0.1, 0.25, 0.3]) != base  # another reward


def test_figure_text():
    fig = _figure()
    assert figure_text(fig) == f"<Figure 2 axes · data {figure_fingerprint(fig)}>"
    plt.close(fig)


# ---- end to end: a notebook executed with start(), then nbval on changed copies ----

CELLS = [
    "from rlhf_nb.course import start\ndevice = start(seed=0)\nimport matplotlib.pyplot as plt\nimport pandas as pd",
    "plt.plot([0, 1, 2], [1, 4, 9])\nplt.show()",                            # code cell 1: plot A
    "plt.plot([0, 1, 2], [9, 4, 1])\nplt.show()",                            # code cell 2: plot B
    "plt.bar(['a', 'b'], [1, 2])\nplt.show()",                               # code cell 3: plot C
    "plt.plot([0, 1], [0, 1])\nplt.show()",                                  # code cell 4: plot D
    "print('stdout is compared')\npd.DataFrame({'x': [1, 2]})",              # code cell 5: stdout + HTML table
]


def _run_nbval(path: Path) -> tuple[int, set[int], str]:
    res = subprocess.run([sys.executable, "-m", "pytest", "--nbval", str(path), "--nbval-current-env",
                          "--nbval-sanitize-with", str(SANITIZE), "-q", "-p", "no:cacheprovider",
                          "--rootdir", str(path.parent)],
                         cwd=path.parent, capture_output=True, text=True, timeout=300)
    failed = {int(m) for m in re.findall(r"^FAILED .*::Cell (\d+)", res.stdout, re.M)}
    return res.returncode, failed, res.stdout


def _image_output(cell):
    return next(o for o in cell.outputs if "image/png" in o.get("data", {}))


@pytest.mark.slow
def test_nbval_catches_a_changed_or_swapped_plot_and_compares_what_the_readme_says(tmp_path):
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    texts = [_image_output(c)["data"]["text/plain"] for c in nb.cells[1:5]]
    assert all(re.fullmatch(r"<Figure 1 axes · data [0-9a-f]{12}>", t) for t in texts), texts
    assert len(set(texts)) == 4  # four different plots, four different fingerprints

    stored = tmp_path / "stored.ipynb"
    nbformat.write(nb, stored)
    rc, failed, out = _run_nbval(stored)
    assert rc == 0 and not failed, out[-3000:]  # re-execution reproduces every fingerprint

    changed = copy.deepcopy(nb)
    a, b = _image_output(changed.cells[1]), _image_output(changed.cells[2])
    a["data"], b["data"] = b["data"], a["data"]                             # cells 1, 2: two plots swapped
    changed.cells[3].source = changed.cells[3].source.replace("[1, 2]", "[1, 3]")  # cell 3: the plotted data changed
    _image_output(changed.cells[4])["data"]["image/png"] = _image_output(nb.cells[1])["data"]["image/png"]  # 4: PNG only
    html = next(o for o in changed.cells[5].outputs if "text/html" in o.get("data", {}))
    html["data"]["text/html"] = html["data"]["text/html"].replace("<td>2</td>", "<td>3</td>")  # cell 5: HTML only
    path = tmp_path / "changed.ipynb"
    nbformat.write(changed, path)
    rc, failed, out = _run_nbval(path)
    assert rc != 0
    # nbval cell numbers count code cells from 0: the swap, the changed data and the HTML fail; the PNG bytes alone
    # (cell 4) are not compared, which is why the fingerprint is there
    assert failed == {1, 2, 3, 5}, out[-4000:]
    assert "<Figure 1 axes · data" in out and "mismatch 'text/plain'" in out
