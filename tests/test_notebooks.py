"""Run every notebook's test cells through nbdev's own runner, one pytest test per notebook.

`nbdev_test` prints no pass/fail counts; running the same runner under pytest gives CI its summary line.
Cells flagged with a `tst_flags` flag (see settings.ini) are skipped, as with `nbdev_test`.
Set UPS_NB_FLAGS="slow" to run the slow cells too.
"""
import os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = sorted(p for d in ('nbs', 'analysis') for p in (ROOT/d).glob('*.ipynb') if not p.name.startswith('_'))

RUNNER = """
import sys
from pathlib import Path
from nbdev.test import test_nb
fn = Path(sys.argv[1])
force = [f for f in sys.argv[2].split(',') if f]
ok, secs = test_nb(fn, skip_flags=['slow'], force_flags=force, basepath=sys.argv[3])
print(f'{fn.name}: {secs:.1f}s')
sys.exit(0 if ok else 1)
"""

@pytest.mark.parametrize('nb', NBS, ids=[f'{p.parent.name}/{p.name}' for p in NBS])
def test_notebook(nb):
    env = {**os.environ, 'IN_TEST': '1', 'MPLBACKEND': 'Agg', 'PYTHONHASHSEED': '0'}
    r = subprocess.run([sys.executable, '-c', RUNNER, str(nb), os.environ.get('UPS_NB_FLAGS', ''), str(ROOT)],
                       capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, f'{nb.name} failed:\n{r.stdout[-4000:]}\n{r.stderr[-8000:]}'
