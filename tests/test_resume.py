"""Kill a training run mid-epoch with SIGKILL, rerun the same command, and get exactly the weights of an uninterrupted run."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parents[1]

def cmd(out, data):
    return [sys.executable, str(ROOT/'ups_nb'/'train.py'), '--config', 'burgers_tiny', '--stage', 'operator',
            f'run.out_dir={out}', f'data.path={data}', 'stages.operator.epochs=25', 'run.ckpt_every=3']

def train_events(run_dir):
    p = run_dir/'log.jsonl'
    if not p.exists(): return []
    out = []
    for l in p.read_text().splitlines():
        try: e = json.loads(l)
        except json.JSONDecodeError: continue
        if e.get('event') == 'train': out.append(e)
    return out

def final_weights(out):
    (rd,) = [p for p in Path(out).iterdir() if p.is_dir()]
    return rd, torch.load(rd/'ckpt'/'operator.pt', weights_only=True)

def test_kill_and_resume(tmp_path):
    data = tmp_path/'tiny.h5'
    env = {**os.environ, 'PYTHONHASHSEED': '0', 'OMP_NUM_THREADS': '1'}
    subprocess.run([sys.executable, '-c', 'from ups_nb.config import load_config; from ups_nb.prepare import generate_data; from pathlib import Path;'
                    f'generate_data(load_config("burgers_tiny"), Path("{data}"), progress=False)'], check=True, env=env, cwd=ROOT)
    ref = subprocess.run(cmd(tmp_path/'ref', data), env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]
    # the same run, killed with SIGKILL once it is well into training (past a checkpoint, mid-epoch)
    p = subprocess.Popen(cmd(tmp_path/'killed', data), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0, killed_at = time.time(), None
    while time.time() - t0 < 300 and p.poll() is None:
        dirs = [d for d in (tmp_path/'killed').glob('*') if d.is_dir()]
        ev = train_events(dirs[0]) if dirs else []
        if ev and ev[-1]['step'] >= 25 and ev[-1]['step'] % 9 not in (0, 8):
            p.send_signal(signal.SIGKILL); p.wait(); killed_at = ev[-1]['step']; break
        time.sleep(0.01)
    assert killed_at is not None, 'the run ended before it could be killed'
    rd = [d for d in (tmp_path/'killed').glob('*') if d.is_dir()][0]
    assert not (rd/'ckpt'/'operator.pt').exists()
    resumed = subprocess.run(cmd(tmp_path/'killed', data), env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = [json.loads(l) for l in (rd/'log.jsonl').read_text().splitlines() if l.strip().endswith('}')]
    resumes = [e for e in log if e.get('event') == 'resume']
    assert len(resumes) == 1 and 0 < resumes[0]['step'] <= killed_at, (resumes, killed_at)
    (_, a), (_, b) = final_weights(tmp_path/'ref'), final_weights(tmp_path/'killed')
    for k in a['model']: assert torch.equal(a['model'][k], b['model'][k]), k
    for k in a['ema']: assert torch.equal(a['ema'][k], b['ema'][k]), k
    assert a['step'] == b['step']
