"""Run the analysis notebooks a user opens in JupyterLab through a real Jupyter kernel (nbclient + ipykernel), not only through
nbdev's in-process runner: the kernel starts from the notebook's folder, as Jupyter starts it, and every cell must run and every figure cell
must show a picture."""
import os, shutil
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ['08_explore_generative_runs.ipynb', '09_explore_operator_runs.ipynb']

@pytest.mark.parametrize('name', NOTEBOOKS)
def test_analysis_notebook_in_a_kernel(name, tmp_path, monkeypatch):
    nbformat = pytest.importorskip('nbformat'); nbclient = pytest.importorskip('nbclient')
    shutil.copytree(ROOT/'analysis'/'results', tmp_path/'results', ignore=shutil.ignore_patterns('runs'))   # the light copies only; figures are written beside them
    nb = nbformat.read(ROOT/'analysis'/name, as_version=4)
    for c in nb.cells:
        if c.cell_type == 'code': c.outputs = []
    monkeypatch.setenv('MPLBACKEND', 'module://matplotlib_inline.backend_inline')
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name='python3', resources={'metadata': {'path': str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs if o.output_type == 'error']
    assert not errors, errors
    pngs = sum('image/png' in o.get('data', {}) for c in nb.cells if c.cell_type == 'code' for o in c.outputs)
    assert pngs >= (5 if name.startswith('08') else 2), f'{name}: only {pngs} figures shown'
    assert list((tmp_path/'results').rglob('analysis/*.png')), 'no figure saved under a run\'s reports folder'
