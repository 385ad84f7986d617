"""Command-line entry points: useful --help, and bad input -> one line on stderr, exit code 2, no traceback."""
import os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

def run(*args, cwd=None):
    env = {**os.environ, 'PYTHONHASHSEED': '0'}
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd or ROOT, env=env, timeout=300)

@pytest.mark.parametrize('cmd,words', [('ups_train', ['--config', '--stage', 'overrides']), ('ups_eval', ['--config', '--run', '--eval', 'overrides']), ('ups_analyze', ['run', '--runs']), ('ups_compare', ['run_a', 'run_b']),
                                       ('ups_data', ['dataset', '--out', '--layout']), ('ups_leaderboard', ['--path', '--metric']),
                                       ('ups_bench', ['--config', '--seeds', '--out']), ('ups_sweep', ['spec', '--parallel']),
                                       ('ups_proxy', ['dataset', '--model']), ('ups_validate', ['--config', '--data']), ('ups_dry_run', ['--estimate-only', '--steps'])])
def test_help(cmd, words):
    r = run(BIN/cmd, '--help')
    assert r.returncode == 0, r.stderr
    for w in words: assert w in r.stdout, (w, r.stdout)

def _one_line_error(r, contains):
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert 'Traceback' not in r.stderr, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, lines
    assert contains in lines[0], lines[0]

@pytest.mark.parametrize('args,contains', [
    (['--config', 'no_such_config'], "'no_such_config' not found"),
    (['train.lrr=1'], "unknown key 'train.lrr' (did you mean 'train.lr'?)"),
    (['train.lr=-1'], 'train.lr must be > 0'),
    (['operator.patch=7'], 'operator.patch=7 does not divide'),
    (['operator.route=latent', 'encoder.patch=7'], 'encoder.patch=7 does not divide'),
    (['operator.route=sideways'], 'operator.route'),
    (['--stage', 'nope'], "stage 'nope' is not one of"),
    (['train.lr'], 'must look like key.sub=value'),
])
def test_train_bad_input(args, contains, tmp_path):
    # run the file as `accelerate launch ups_nb/train.py` does: as a script
    _one_line_error(run(sys.executable, ROOT/'ups_nb'/'train.py', *args, f'run.out_dir={tmp_path}'), contains)

def test_train_bad_yaml(tmp_path):
    (tmp_path/'bad.yaml').write_text('include: base.yaml\n')
    _one_line_error(run(BIN/'ups_train', '--config', tmp_path/'bad.yaml'), "'base.yaml' not found")

def test_eval_without_training(tmp_path):
    r = run(BIN/'ups_eval', 'data.path=' + str(tmp_path/'missing.h5'), f'run.out_dir={tmp_path}')
    _one_line_error(r, 'train the run of this config first')
    assert not list(tmp_path.iterdir())                                        # nothing written

def test_data_bad_input_and_no_overwrite(tmp_path):
    _one_line_error(run(BIN/'ups_data', 'nosuchpde', '--out', tmp_path), 'dataset')
    f = tmp_path/'keep.h5'; f.write_bytes(b'precious')
    _one_line_error(run(BIN/'ups_data', 'burgers', '--out', tmp_path, '--name', 'keep.h5', '--n', '2', '--nx', '64'), 'keep.h5')
    assert f.read_bytes() == b'precious'

def test_leaderboard_missing(tmp_path):
    _one_line_error(run(BIN/'ups_leaderboard', '--path', tmp_path/'none.jsonl'), 'none.jsonl')

def test_latent_route_end_to_end(tmp_path):
    "The UPT-style route trains jointly in one stage and is evaluated in latent and re-encoding modes beside the baselines."
    import json
    r = run(sys.executable, ROOT/'ups_nb'/'train.py', '--config', 'burgers_tiny', 'operator.route=latent', 'run.out_dir=runs',
            'stages.operator.lambda_inv_dec=1', cwd=tmp_path)                  # the data is generated into tmp_path/data
    assert r.returncode == 0, r.stderr[-3000:]
    (rd,) = [d for d in (tmp_path/'runs').iterdir() if (d/'config.yaml').exists()]
    from ups_nb.runs import finished_result
    ev = finished_result(rd)
    assert set(ev['models']) == {'operator', 'operator_reencode', 'fno', 'persistence', 'operator+corrector', 'operator+student'}
    assert ev['models']['operator']['params'] == ev['models']['operator_reencode']['params']
    comps = {k for e in map(json.loads, (rd/'log.jsonl').read_text().splitlines()) if e.get('event') == 'train' and e['stage'] == 'operator' for k in e}
    assert {'latent', 'inv_enc', 'inv_dec', 'rollout_mse'} <= comps

def test_validate_lists_every_error(tmp_path):
    r = run(BIN/'ups_validate', '--config', 'burgers_tiny', 'train.lr=-1', 'eval.n_boot=5', f'run.out_dir={tmp_path}')
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and any('train.lr must be > 0' in l for l in lines) and any('eval.n_boot' in l for l in lines), lines
    r = run(BIN/'ups_validate', '--config', 'burgers_tiny', '--data', tmp_path/'missing.h5')
    assert r.returncode == 2 and f'data file {tmp_path/"missing.h5"} does not exist' in r.stdout

def test_dry_run_estimate_only(tmp_path):
    r = run(BIN/'ups_dry_run', '--config', 'burgers_tiny', '--estimate-only', '--steps', '1', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert 'batches: synthetic' in r.stdout and 'tokens/batch 64' in r.stdout and not (tmp_path/'data').exists()
