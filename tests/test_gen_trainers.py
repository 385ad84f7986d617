"""The three generative trainers run from the command line (`python ups_nb/train.py --config X ...`) on CPU with tiny settings,
and an overfit run memorises its one sample (the logged loss falls to near zero)."""
import json, os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ['gen.net.preset=micro', 'gen.field.resolution=16', 'data.nx=16', 'data.n_traj=4', 'data.t_end=0.5', 'data.dt_out=0.25',
        'data.splits=[0.5,0.25,0.25]', 'data.batch_size=2', 'train.max_steps=4', 'gen.eval.n_samples=4', 'gen.sampling.steps=2',
        'run.log_every=1', 'gen.diagnostics.grad_bucket_every=2', 'gen.diagnostics.t_buckets=4']

def train(tmp, config, *overrides):
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MPLBACKEND': 'Agg', 'PYTHONPATH': str(ROOT)}
    r = subprocess.run([sys.executable, str(ROOT/'ups_nb'/'train.py'), '--config', config, f'run.out_dir={tmp}/runs', *overrides],
                       cwd=tmp, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    runs = [d for d in (Path(tmp)/'runs').iterdir() if d.name.startswith(overrides_name(config, overrides))]
    return r.stdout, runs[-1]

def overrides_name(config, overrides):
    return next((o.split('=', 1)[1] for o in overrides if o.startswith('run.name=')), config)

def events(run, kind):
    return [json.loads(l) for l in (run/'log.jsonl').read_text().splitlines() if json.loads(l)['event'] == kind]

@pytest.fixture(scope='module')
def data(tmp_path_factory):
    "One tiny NS file (4 trajectories of 3 frames at 16x16) shared by the runs."
    d = tmp_path_factory.mktemp('gen')
    sys.path.insert(0, str(ROOT))
    from ups_nb.config import load_config
    from ups_nb.data import generate_fields
    generate_fields(load_config('edm_tiny', TINY), d/'ns.h5')
    return d, d/'ns.h5'

def check_common(run):
    tr, dg = events(run, 'train'), events(run, 'diagnostics')
    assert len(tr) == 4 and {'loss_t0', 'loss_t3', 'frac_t3', 'mse'} <= set(tr[0])
    assert len(dg) == 2 and {'grad_t0', 'grad_t3'} <= set(dg[0]) and all(v > 0 for k, v in dg[0].items() if k.startswith('grad_t'))
    return json.loads((run/'eval.json').read_text())

def test_sr_flow_cli(data):
    tmp, f = data
    out, run = train(tmp, 'sr_flow_tiny', *TINY, f'data.path={f}', 'gen.diagnostics.sample_every=2', 'gen.eval.members=2')
    ev = check_common(run)
    assert {'model', 'model_mean', 'bicubic', 'nearest'} <= set(ev) and 'PSNR' in out and 'model_mean' in out
    assert (run/'samples'/'grid_0000002.png').exists() and (run/'spectra_final.npz').exists()
    assert sorted(p.name for p in (run/'power_ema').glob('snap_*')) == ['snap_0000004_0.050.pt', 'snap_0000004_0.100.pt']

def test_edm_cli(data):
    tmp, f = data
    _, run = train(tmp, 'edm_tiny', *TINY, f'data.path={f}')
    ev = check_common(run)
    assert ev['samples']['finite'] and len(ev['val_profile']) == 4

def test_ddpm_cli(data):
    tmp, f = data
    _, run = train(tmp, 'ddpm_e2_tiny', *TINY, f'data.path={f}', 'gen.eval.feature_steps=5', 'gen.eval.draws=2')
    ev = check_common(run)
    assert ev['frechet_feature_distance'] >= 0 and (run/'feature_net.pt').exists()
    d0, d1 = ev['draws']                                             # two sample draws, each scored; draw 0 is the headline
    assert d0['frechet_feature_distance'] == ev['frechet_feature_distance'] and d0['std_gap'] == ev['samples']['std_gap']
    assert d0['sample_std'] != d1['sample_std'] and ev['draw_std']['frechet_feature_distance'] >= 0
    assert {'mean_gap', 'spectrum_gap', 'floor_std_gap'} <= set(ev['samples']) and (run/'draws'/'grid_draw1.png').exists()
    assert {'val_denoise', 'val_t0'} <= set(events(run, 'epoch')[-1])

def test_overfit_reaches_near_zero_loss(data):
    "EDM on one fixed sample at high noise (ln sigma ~ N(3, 0.1^2)): the target is dominated by the sample itself, which the net memorises."
    tmp, f = data
    _, run = train(tmp, 'edm_tiny', *TINY, f'data.path={f}', 'run.name=overfit', 'gen.overfit=true', 'data.batch_size=1',
                   'gen.timesteps.kind=lognormal', 'gen.timesteps.p_mean=3.0', 'gen.timesteps.p_std=0.1', 'gen.weighting.kind=none', 'gen.weighting.normalise=false',
                   'train.lr=3e-2', 'train.min_lr=1e-4', 'train.warmup_steps=0', 'train.max_steps=80', 'train.epochs=80',
                   'run.log_every=5', 'gen.diagnostics.grad_bucket_every=0')
    loss = [e['loss'] for e in events(run, 'train')]
    assert len(loss) == 16
    assert loss[-1] < 0.05 and loss[-1] < 0.1 * loss[0], loss
