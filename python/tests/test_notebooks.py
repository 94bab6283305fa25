"""The lesson notebooks in examples/ run, top to bottom, in a fresh kernel of this venv (as
`jupyter nbconvert --execute` runs them); each viewer they show is a sandboxed frame holding
attend's page. The executed copies go to $ATTEND_NOTEBOOKS_OUT (for the browser test)."""

import glob
import json
import os

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "examples", "*.ipynb")))


def needs(path):
    """What a notebook needs beyond this package, and whether it is here."""
    src = open(path, encoding="utf-8").read()
    if "import torch" in src:
        try:
            import torch  # noqa: F401
        except ImportError:
            return "it trains a PyTorch model: pip install torch to run it"
    return None


def test_there_are_lesson_notebooks_with_outputs_stripped():
    assert len(NOTEBOOKS) >= 3
    for path in NOTEBOOKS:
        nb = json.load(open(path, encoding="utf-8"))
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path}: outputs kept"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_a_notebook_runs(path):
    nbformat = pytest.importorskip("nbformat", reason="running the notebooks needs nbformat, nbclient and ipykernel (scripts/test installs them)")
    nbclient = pytest.importorskip("nbclient", reason="running the notebooks needs nbclient and ipykernel (scripts/test installs them)")
    why = needs(path)
    if why:
        pytest.skip(why)
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": os.path.dirname(path)}}).execute()
    frames = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", f"{os.path.basename(path)}: {out.get('ename')}: {out.get('evalue')}"
            html = out.get("data", {}).get("text/html", "")
            if "<iframe" in html:
                frames += 1
                assert "sandbox='allow-scripts'" in html and "attend-data" in html
    assert frames >= 1, "each lesson shows attend's viewer at least once"
    dest = os.environ.get("ATTEND_NOTEBOOKS_OUT")
    if dest:
        os.makedirs(dest, exist_ok=True)
        nbformat.write(nb, os.path.join(dest, os.path.basename(path)))
