"""The package is generated from the notebooks: `nbdev_export` and `nbdev_clean` must change nothing."""
import shutil, subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def _copy(tmp):
    for name in ('settings.ini', 'nbs', 'ups_nb', 'analysis'):
        src = ROOT/name
        if src.is_dir(): shutil.copytree(src, tmp/name, ignore=shutil.ignore_patterns('__pycache__', '.ipynb_checkpoints', '_proc'))
        elif src.exists(): shutil.copy2(src, tmp/name)
    return tmp

def _snapshot(d):
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob('*'))
            if p.is_file() and '__pycache__' not in p.parts and '.ipynb_checkpoints' not in p.parts}

def _changed(cmd, tmp_path):
    d = _copy(tmp_path)
    before = _snapshot(d)
    r = subprocess.run(cmd, cwd=d, capture_output=True, text=True)
    assert r.returncode == 0, f'{cmd[0]} failed: {r.stderr[-2000:]}'
    after = _snapshot(d)
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))

def test_export_is_in_sync(tmp_path):
    changed = _changed(['nbdev_export'], tmp_path)
    assert not changed, f'ups_nb/ is out of sync with nbs/ (run nbdev_export and commit): {changed}'

def test_notebooks_are_clean(tmp_path):
    changed = _changed(['nbdev_clean'], tmp_path)
    assert not changed, f'notebooks are not clean (run nbdev_clean and commit): {changed}'
