"""The evaluation layer end to end: physics guards on a real vector field, scored with and without."""
import json, os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MHD = ['name=mhd_guard_tiny', 'data.dataset=mhd2d', 'data.nx=32', 'data.x_down=1', 'data.t_end=0.5', 'data.dt_out=0.05', 'data.t_down=1',
       'data.nu=[0.001]', 'data.mhd_fields=[u,v,bx,by]', 'data.conserve_mean=true', 'operator.preset=tiny2d', 'readout.enabled=false', 'corrector.bases=[]']

def run(*args, cwd):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, env={**os.environ, 'PYTHONHASHSEED': '0'}, timeout=600)

def test_hodge_guard_on_mhd(tmp_path):
    "The Hodge guard makes every guarded rollout divergence-free in physical units; the unguarded rows stay beside them."
    r = run(BIN/'ups_train', '--config', 'burgers_tiny', *MHD, 'eval.guards.kinds=[hodge]', 'eval.guards.vectors=[[0,1],[2,3]]', f'run.out_dir={tmp_path}/runs', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    ev = json.loads(next((tmp_path/'runs').glob('mhd_guard_tiny-*/eval.json')).read_text())['models']
    assert {'operator+guards', 'fno+guards', 'persistence+guards'} <= set(ev)
    for k in ('operator', 'fno'):
        assert ev[f'{k}+guards']['div_error'] < 1e-5 < ev[k]['div_error'], (k, ev[k]['div_error'], ev[f'{k}+guards']['div_error'])
    assert ev['persistence']['div_error'] < 1e-5          # the solver's fields are divergence-free: the metric and the units agree
    assert 'div error' in r.stdout and 'operator+guards' in r.stdout

def test_guard_channel_out_of_range(tmp_path):
    r = run(BIN/'ups_train', '--config', 'burgers_tiny', *MHD, 'eval.guards.kinds=[hodge]', 'eval.guards.vectors=[[0,4]]', f'run.out_dir={tmp_path}/runs', cwd=tmp_path)
    assert r.returncode == 2 and 'Traceback' not in r.stderr
    assert [l for l in r.stderr.splitlines() if l.strip()] == ['error: config: eval.guards names channel 4, but the data has 4 channels'], r.stderr
