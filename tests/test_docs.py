"""The docs build's first step, `nbdev_proc_nbs`, must succeed on the notebooks (Quarto itself renders in the docs workflow)."""
import shutil, subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def test_proc_nbs(tmp_path):
    for name in ('settings.ini', '_quarto.yml', 'styles.css', 'nbs', 'analysis', 'ups_nb'):
        src = ROOT/name
        if src.is_dir(): shutil.copytree(src, tmp_path/name, ignore=shutil.ignore_patterns('__pycache__', '.ipynb_checkpoints', '_proc'))
        else: shutil.copy2(src, tmp_path/name)
    r = subprocess.run(['nbdev_proc_nbs', '--path', '.'], cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    proc = tmp_path/'_proc'
    assert (proc/'_quarto.yml').exists()
    nbs = {p.name for p in (proc/'nbs').glob('*.ipynb')}
    assert {p.name for p in (ROOT/'nbs').glob('*.ipynb')} <= nbs, nbs
