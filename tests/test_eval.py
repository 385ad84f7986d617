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
    from ups_nb.runs import finished_result
    ev = finished_result(next((tmp_path/'runs').glob('mhd_guard_tiny-*')))['models']
    assert {'operator+guards', 'fno+guards', 'persistence+guards'} <= set(ev)
    for k in ('operator', 'fno'):
        assert ev[f'{k}+guards']['div_error'] < 1e-5 < ev[k]['div_error'], (k, ev[k]['div_error'], ev[f'{k}+guards']['div_error'])
    assert ev['persistence']['div_error'] < 1e-5          # the solver's fields are divergence-free: the metric and the units agree
    assert 'div error' in r.stdout and 'operator+guards' in r.stdout

def test_guard_channel_out_of_range(tmp_path):
    r = run(BIN/'ups_train', '--config', 'burgers_tiny', *MHD, 'eval.guards.kinds=[hodge]', 'eval.guards.vectors=[[0,4]]', f'run.out_dir={tmp_path}/runs', cwd=tmp_path)
    assert r.returncode == 2 and 'Traceback' not in r.stderr
    assert [l for l in r.stderr.splitlines() if l.strip()] == ['error: config: eval.guards names channel 4, but data.mhd_fields has 4 channels'], r.stderr
    assert not (tmp_path/'data').exists()                                  # refused before any data is made

def _chromium():
    import shutil
    return next((shutil.which(b) for b in ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable') if shutil.which(b)), None)

def test_eval_report_leaderboard_compare(tmp_path):
    "A trained default-shaped run: `ups_eval --run` writes metrics JSON/CSV, figures and an HTML page that a real browser renders with every figure; the leaderboard CSV/HTML have the playbook's columns and a champion; `ups_analyze` and `ups_compare` summarise."
    import pandas as pd, pytest
    runs = tmp_path/'runs'
    for seed in (0, 1):
        r = run(BIN/'ups_train', '--config', 'burgers_tiny', f'seed={seed}', 'corrector.bases=[]', f'run.out_dir={runs}', cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
    a, b = sorted(p.name for p in runs.iterdir() if (p/'finished.json').exists())
    before = (runs/a/'finished.json').read_text(), (tmp_path/'reports'/a/'run'/'metrics.json').read_text()
    r = run(BIN/'ups_eval', '--run', a, '--runs', runs, '--eval', 'small', '--quiet', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert ((runs/a/'finished.json').read_text(), (tmp_path/'reports'/a/'run'/'metrics.json').read_text()) == before   # the run's record of completion and its own evaluation are untouched
    rep = tmp_path/'reports'/a/'small'
    assert {'metrics.json', 'metrics.csv', 'report.html', 'curves.png', 'rollout.png', 'spectra.png', 'training.png'} <= {p.name for p in rep.iterdir()}
    m = pd.read_csv(rep/'metrics.csv'); assert {'operator', 'fno', 'persistence'} <= set(m.model) and {'nrmse_lo', 'nrmse_hi', 'vrmse'} <= set(m.columns)
    board = pd.read_csv(tmp_path/'reports'/'leaderboard.csv')
    assert list(board.columns[1:15]) == ['run_id', 'commit', 'config_hash', 'nrmse', 'cons_gap', 'bc_violation', 'ece', 'wall_clock', 'params', 'date', 'label', 'task', 'model', 'seed']
    assert set(board['eval']) == {'run', 'small'} and board.champion.sum() == 3      # one per (data file, evaluation): each seed made its own data
    assert (tmp_path/'reports'/'leaderboard.html').exists() and '- what next:' in (tmp_path/'reports'/a/'notes.md').read_text()
    r = run(BIN/'ups_analyze', a, '--runs', runs, cwd=tmp_path); assert r.returncode == 0 and '## Evaluation: small' in r.stdout, r.stderr
    r = run(BIN/'ups_compare', a, b, '--runs', runs, cwd=tmp_path); assert r.returncode == 0 and '| nrmse |' in r.stdout and '- `seed`: ' in r.stdout, r.stderr
    r = run(BIN/'ups_eval', '--run', 'nope', '--runs', runs, cwd=tmp_path)
    assert r.returncode == 2 and 'Traceback' not in r.stderr and 'run nope:' in r.stderr
    browser = _chromium()
    if browser is None: pytest.skip('no Chromium here: the report was written but not rendered in a browser (.ci/run installs one)')
    dom = subprocess.run([browser, '--headless', '--no-sandbox', '--disable-gpu', '--virtual-time-budget=5000', '--dump-dom', (rep/'report.html').as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    import re
    shown = re.search(r'<body data-figures="(\d+)" data-figures-ok="(\w+)"', dom)
    assert shown and int(shown[1]) == 4 and shown[2] == 'true', dom[:300]      # curves, rollout, spectra, training (no ensemble here)

def test_sweep_resumes_after_kill(tmp_path):
    "A sweep killed after its first run restarts without retraining or re-evaluating that run, and ends with the full evaluation of its best run on the leaderboard."
    import signal, time, pandas as pd
    (tmp_path/'s.yaml').write_text('config: burgers_tiny\ngrid: {train.lr: [0.0005, 0.002]}\n'
                                   'overrides: {corrector.bases: [], readout.enabled: false, gates.cons_gap: 0.001}\nlocal: {trials: 1}\ntop_k: 1\n')
    cmd = [str(BIN/'ups_sweep'), str(tmp_path/'s.yaml'), '--runs', str(tmp_path/'runs')]
    p = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list((tmp_path/'reports').glob('*/small/metrics.json')): time.sleep(0.5)
    os.killpg(p.pid, signal.SIGKILL); p.wait()
    (first,) = [m.parent.parent.name for m in (tmp_path/'reports').glob('*/small/metrics.json')]
    stamp = (tmp_path/'runs'/first/'finished.json').stat().st_mtime_ns, (tmp_path/'reports'/first/'small'/'metrics.json').stat().st_mtime_ns
    r = run(*cmd, cwd=tmp_path); assert r.returncode == 0, r.stderr[-2000:]
    assert ((tmp_path/'runs'/first/'finished.json').stat().st_mtime_ns, (tmp_path/'reports'/first/'small'/'metrics.json').stat().st_mtime_ns) == stamp
    t = pd.read_csv(tmp_path/'reports'/'sweeps'/'s.csv')
    assert list(t.phase) == ['grid', 'grid', 'local'] and t.full.notna().sum() == 1 and t.run.nunique() == 3
    board = pd.read_csv(tmp_path/'reports'/'leaderboard.csv')
    assert set(board['eval']) == {'run', 'small', 'full'} and board[board['eval'] == 'small'].run_id.nunique() == 3
    # gates.cons_gap 0.001: every operator after the first champion fails the conservation gate, and the fail-safe evaluates it again with the mass guard
    noted = [n for n in (tmp_path/'reports').glob('*/notes.md') if 'fail-safe: conservation gate failed' in n.read_text()]
    assert len(noted) == 2 and 'operator+guards[failsafe]' in set(board.model)
    assert all(n.read_text().count('fail-safe: conservation') == 1 for n in noted)      # the resumed sweep did not repeat them
