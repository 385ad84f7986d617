"""Everyday paths as a user and a cluster scheduler meet them: staged runs, exit codes, kills between a stage's
checkpoint and its log record, non-finite training, bad data files, unwritable places, bad configs, concurrent runs.
Every failure must be exit code 2 with one line naming the field, file or path, no traceback, and nothing on disk lost."""
import hashlib, json, os, resource, shutil, signal, subprocess, sys, tempfile, time
from pathlib import Path
import h5py, numpy as np, pytest, torch
from ups_nb.runs import finished_result

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TRAIN = [sys.executable, str(ROOT/'ups_nb'/'train.py')]
ENV = {**os.environ, 'PYTHONHASHSEED': '0', 'OMP_NUM_THREADS': '1'}

def run(*args, cwd=None, env=None, **kw):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd or ROOT, env=env or ENV, timeout=600, **kw)

def ok(r):
    assert r.returncode == 0, (r.returncode, r.stdout[-2000:], r.stderr[-3000:])
    return r

def one_line_error(r, *contains):
    "Exit code 2, no traceback, and the last line of stderr (progress bars may precede it) is one `error:` line."
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-3000:])
    assert 'Traceback' not in r.stderr, r.stderr[-3000:]
    lines = [l for l in r.stderr.split('\n') if l.strip()]
    errs = [l for l in lines if 'error' in l.lower()]
    assert len(errs) == 1 and lines[-1] == errs[0] and lines[-1].startswith('error: '), lines[-5:]
    for c in contains: assert str(c) in lines[-1], (c, lines[-1])
    return lines[-1]

def digest(*paths):
    "A fingerprint of files (content and names) under `paths`: proof that nothing on disk changed."
    h = hashlib.sha256()
    for p in paths:
        for f in sorted(Path(p).rglob('*')) if Path(p).is_dir() else [Path(p)]:
            if f.is_file(): h.update(str(f).encode()); h.update(f.read_bytes())
    return h.hexdigest()

def run_folder(out):
    (rd,) = [d for d in Path(out).iterdir() if d.is_dir()]
    return rd

def events(rd, kind=None):
    return [e for e in map(json.loads, (rd/'log.jsonl').read_text().splitlines()) if kind is None or e.get('event') == kind]

def strict_json_lines(p):
    "Every line is standard JSON (no bare NaN/Infinity tokens)."
    def no(c): raise ValueError(f'non-standard JSON token {c} in {p}')
    return [json.loads(l, parse_constant=no) for l in Path(p).read_text().splitlines()]

@pytest.fixture(scope='module')
def data(tmp_path_factory):
    "The burgers_tiny data file, made once (read-only for the tests: each test that breaks data copies it)."
    p = tmp_path_factory.mktemp('data')/'tiny.h5'
    ok(run(sys.executable, '-c', 'from ups_nb.config import load_config; from ups_nb.prepare import generate_data; from pathlib import Path;'
           f'generate_data(load_config("burgers_tiny"), Path("{p}"), progress=False)'))
    return p

def tiny(data, out, *extra):
    return [*TRAIN, '--config', 'burgers_tiny', f'data.path={data}', f'run.out_dir={out}', *extra]

# --- 1, 2, 9: staged runs, exit codes, intermixed overrides, finished runs ---------------------------------------------

def test_staged_run_and_exit_codes(data, tmp_path):
    out, both = tmp_path/'runs', 'corrector.bases=[operator,fno]'      # a corrector for each base
    ok(run(*TRAIN, f'data.path={data}', '--stage', 'operator', f'run.out_dir={out}', '--config', 'burgers_tiny', 'run.ckpt_every=7', 'run.log_every=3', both))
    ok(run(*tiny(data, out, '--stage', 'readout', both)))
    ok(run(*tiny(data, out.resolve(), '--stage', 'fno', both), cwd=tmp_path))      # out_dir absolute, another working directory
    rd = run_folder(out)
    bases = digest(rd/'ckpt'/'operator.pt', rd/'ckpt'/'fno.pt')
    ok(run(*tiny(data, out, '--stage', 'diffusion', both)))
    assert digest(rd/'ckpt'/'operator.pt', rd/'ckpt'/'fno.pt') == bases                # the frozen bases are only read
    assert {'diffusion_operator.pt', 'diffusion_fno.pt'} <= {p.name for p in (rd/'ckpt').iterdir()}
    teachers = digest(rd/'ckpt'/'diffusion_operator.pt', rd/'ckpt'/'diffusion_fno.pt')
    ok(run(*tiny(data, out, '--stage', 'distill', both)))
    assert digest(rd/'ckpt'/'diffusion_operator.pt', rd/'ckpt'/'diffusion_fno.pt') == teachers          # the teachers are only read
    assert {'distill_operator.pt', 'distill_fno.pt'} <= {p.name for p in (rd/'ckpt').iterdir()}
    r = ok(run(BIN/'ups_eval', '--config', 'burgers_tiny', f'data.path={data}', f'run.out_dir={out}', both))
    assert 'operator / fno' in r.stdout and 'fno+corrector: 3 members, spread-skill' in r.stdout and 'fno student: 2 steps' in r.stdout
    board = out/'leaderboard.jsonl'
    assert len(board.read_text().splitlines()) == 7
    ev = finished_result(rd)
    ck = {s: torch.load(rd/'ckpt'/f'{s}.pt', weights_only=True) for s in ('operator', 'fno')}
    for s in ('operator', 'fno'):
        assert ev['models'][s]['train_seconds'] == pytest.approx(ck[s]['seconds'])
        assert ev['models'][s]['train_cpu_seconds'] == pytest.approx(ck[s]['cpu_seconds']) and ck[s]['cpu_seconds'] > 0
    # the whole command again: the run is finished, so it prints the saved table and appends nothing
    before = digest(rd/'ckpt', board)
    r = ok(run(BIN/'ups_train', '--config', 'burgers_tiny', f'data.path={data}', f'run.out_dir={out}', both))
    assert 'is finished' in r.stdout and 'operator / fno' in r.stdout
    assert digest(rd/'ckpt', board) == before
    # asked for, it evaluates again; the leaderboard keeps one row per model and run
    ok(run(BIN/'ups_train', '--stage', 'eval', '--config', 'burgers_tiny', f'data.path={data}', f'run.out_dir={out}', both))
    r = ok(run(BIN/'ups_leaderboard', '--path', board))
    assert sum(rd.name in l for l in r.stdout.splitlines()) == 7
    r = ok(run(BIN/'ups_data', 'burgers', '--n', '2', '--nx', '64', '--t_end', '0.1', '--dt_out', '0.05', '--out', tmp_path/'gen'))
    assert r.stdout.startswith('wrote ')

# --- 3: a kill between a stage's final checkpoint and its log record ---------------------------------------------------

def test_kill_between_checkpoint_and_record(data, tmp_path):
    out = tmp_path/'runs'
    ok(run(*tiny(data, out, '--stage', 'operator', 'stages.fno.epochs=null')))
    rd = run_folder(out)
    # what a kill right after ckpt/<stage>.pt was renamed into place leaves: the checkpoint, no stage_done event
    lines = (rd/'log.jsonl').read_text().splitlines()
    (rd/'log.jsonl').write_text(''.join(l + '\n' for l in lines if json.loads(l).get('event') != 'stage_done'))
    before_op = tmp_path/'operator.pt'; shutil.copy(rd/'ckpt'/'operator.pt', before_op)
    ok(run(*tiny(data, out, 'stages.fno.epochs=null')))   # fno (for the operator's CPU time, read from its checkpoint) and eval
    ev = finished_result(rd)
    ck = {s: torch.load(rd/'ckpt'/f'{s}.pt', weights_only=True) for s in ('operator', 'fno')}
    assert ev['models']['operator']['train_cpu_seconds'] == pytest.approx(ck['operator']['cpu_seconds'])
    budget = events(rd, 'budget')[-1]                                                   # the operator's training FLOPs, as a step count
    assert ck['fno']['reason'] == 'max_steps' and ck['fno']['step'] == budget['steps'] and budget['flops'] >= budget['operator_flops'] > 0
    assert ev['models']['fno']['train_seconds'] == pytest.approx(ck['fno']['seconds']) and ck['fno']['seconds'] > 0
    assert (rd/'ckpt'/'operator.pt').read_bytes() == before_op.read_bytes()     # the finished stage is not trained again
    assert [e['stage'] for e in events(rd, 'stage_skipped')] == ['operator']

def test_stage_without_its_input(data, tmp_path):
    one_line_error(run(*tiny(data, tmp_path/'runs', '--stage', 'fno', 'stages.fno.epochs=null')), 'operator.pt is missing', "run the 'operator' stage first")
    one_line_error(run(*tiny(data, tmp_path/'runs', '--stage', 'eval')), 'operator.pt is missing', "run the 'operator' stage first")
    one_line_error(run(*tiny(data, tmp_path/'runs', '--stage', 'readout')), 'operator.pt is missing', "run the 'operator' stage first")
    one_line_error(run(*tiny(data, tmp_path/'runs', '--stage', 'diffusion')), 'operator.pt is missing', "run the 'operator' stage first")
    one_line_error(run(*tiny(data, tmp_path/'runs', '--stage', 'diffusion', 'corrector.bases=[fno]')), 'fno.pt is missing', "run the 'fno' stage first")
    out = tmp_path/'op'; ok(run(*tiny(data, out, '--stage', 'operator')))
    one_line_error(run(*tiny(data, out, '--stage', 'distill')), 'diffusion_operator.pt is missing', "run the 'diffusion' stage first (--stage diffusion")

# --- 4: non-finite training ---------------------------------------------------------------------------------------------

def test_nonfinite_training_stops(data, tmp_path):
    out = tmp_path/'runs'
    r = run(*tiny(data, out, 'stages.operator.lr=1e6'))
    one_line_error(r, 'operator: non-finite loss or gradient', 'train.nonfinite_skips=3')
    rd = run_folder(out)
    assert not (rd/'ckpt'/'operator.pt').exists() and not (rd/'finished.json').exists() and not (out/'leaderboard.jsonl').exists()
    log = strict_json_lines(rd/'log.jsonl')
    assert [e['event'] for e in log][-1] == 'stage_failed' and sum(e['event'] == 'nonfinite' for e in log) == 4

# --- 5: bad data --------------------------------------------------------------------------------------------------------

def _broken(data, tmp_path, name, edit):
    p = tmp_path/name
    shutil.copy(data, p)
    with h5py.File(p, 'r+') as f: edit(f)
    return p

@pytest.mark.parametrize('name,edit,message', [
    ('nan3.h5', lambda f: f['tensor'].__setitem__((3, 5, 7), np.nan), 'has NaN/Inf in trajectory 3'),
    ('inf5.h5', lambda f: f['tensor'].__setitem__((5, 40, 0), np.inf), 'has NaN/Inf in trajectory 5'),
    ('huge.h5', lambda f: f['tensor'].__setitem__((2, 10, 3), 3e38), 'has values up to 3e+38 in trajectory 2'),
    ('zeroed.h5', lambda f: f['tensor'].__setitem__((4, slice(50, 120)), 0), 'trajectory 4 is exactly zero from frame 50'),
    ('zerotraj.h5', lambda f: f['tensor'].__setitem__(6, 0), 'trajectory 6 is exactly zero in every frame'),
    ('nant.h5', lambda f: f['t-coordinate'].__setitem__(7, np.nan), 'has NaN/Inf in its time coordinate'),
])
def test_bad_data_file(data, tmp_path, name, edit, message):
    p = _broken(data, tmp_path, name, edit)
    before = digest(p)
    one_line_error(run(*tiny(p, tmp_path/'runs')), p, message)
    assert digest(p) == before and not Path(str(p) + '.stats.json').exists()
    assert not list((run_folder(tmp_path/'runs')/'ckpt').iterdir())          # stopped before any training

def test_one_frame_file(tmp_path):
    from ups_nb.formats import write_pdebench_1d
    p = write_pdebench_1d(tmp_path/'one.h5', np.ones((8, 1, 64), np.float32), np.linspace(0, 1, 64), [0.0])
    one_line_error(run(*TRAIN, '--config', 'burgers_tiny', f'data.path={p}', f'run.out_dir={tmp_path}/runs'), 'data.initial_step', 'one.h5')

def test_repaired_file_recomputes_statistics(data, tmp_path):
    p = _broken(data, tmp_path, 'fixme.h5', lambda f: f['tensor'].__setitem__((3, 5, 7), np.nan))
    one_line_error(run(*tiny(p, tmp_path/'a', '--stage', 'operator')), 'trajectory 3')
    with h5py.File(p, 'r+') as f, h5py.File(data, 'r') as g: f['tensor'][3, 5, 7] = g['tensor'][3, 5, 7]
    ok(run(*tiny(p, tmp_path/'b', '--stage', 'operator')))
    ok(run(*tiny(data, tmp_path/'c', '--stage', 'operator')))
    (a,), (b,) = (list((tmp_path/x).glob('*/ckpt/operator.pt')) for x in 'bc')
    wa, wb = (torch.load(x, weights_only=True)['model'] for x in (a, b))
    for k in wa: assert torch.equal(wa[k], wb[k]), k                     # the repaired file trains exactly like the clean one

# --- 6: unwritable places -----------------------------------------------------------------------------------------------

def as_unprivileged(cmd):
    "`cmd` run so that file permissions bind it: root ignores them unless it drops CAP_DAC_OVERRIDE (setpriv)."
    if os.getuid() != 0: return cmd
    if shutil.which('setpriv') is None: pytest.skip('running as root without setpriv: read-only folders cannot be made')
    return ['setpriv', '--bounding-set=-dac_override,-dac_read_search,-fowner', '--', *cmd]

def test_out_dir_is_a_file(data, tmp_path):
    (tmp_path/'afile').write_text('keep')
    one_line_error(run(*tiny(data, tmp_path/'afile')), tmp_path/'afile', 'cannot write here')
    assert (tmp_path/'afile').read_text() == 'keep'

def test_read_only_places(data, tmp_path):
    d = tmp_path
    (d/'ro').mkdir(); (d/'ro').chmod(0o555)
    one_line_error(run(*as_unprivileged(tiny(data, d/'ro'))), d/'ro', 'cannot write here', 'Permission denied')
    assert not list((d/'ro').iterdir())
    # a read-only leaderboard stops the run before training, not after it
    (d/'out').mkdir(); board = d/'out'/'leaderboard.jsonl'
    board.write_text('{"run": "earlier", "model": "fno", "nrmse": 0.1}\n'); board.chmod(0o444)
    before = digest(board)
    one_line_error(run(*as_unprivileged(tiny(data, d/'out'))), board, 'cannot write here')
    assert digest(board) == before and not list(d.glob('out/*/ckpt/*.pt'))
    # data that must be generated into a read-only folder
    (d/'work'/'data').mkdir(parents=True); (d/'work'/'data').chmod(0o555)
    r = run(*as_unprivileged([*TRAIN, '--config', 'burgers_tiny', f'run.out_dir={d}/work/runs']), cwd=d/'work')
    one_line_error(r, 'data', 'Permission denied')
    # a read-only ckpt/ inside an existing run folder
    ok(run(*tiny(data, d/'o2', '--stage', 'operator')))
    rd = run_folder(d/'o2')
    (rd/'ckpt').chmod(0o555)
    before = digest(rd)
    one_line_error(run(*as_unprivileged(tiny(data, d/'o2', '--stage', 'fno'))), rd/'ckpt', 'cannot write here')
    assert digest(rd) == before
    for p in (d/'ro', d/'work'/'data', rd/'ckpt'): p.chmod(0o755)

def test_file_size_limit(data, tmp_path):
    def limit(): resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
    r = run(*tiny(data, tmp_path/'runs'), preexec_fn=limit)
    one_line_error(r, 'File too large')
    rd = run_folder(tmp_path/'runs')
    assert not list(rd.rglob('*.tmp')) and not list(rd.glob('ckpt/*.pt'))

def test_ups_data_error_on_its_own_line(tmp_path):
    def limit(): resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, 16 * 1024))
    r = run(BIN/'ups_data', 'burgers', '--n', '4', '--nx', '256', '--out', tmp_path, preexec_fn=limit)
    one_line_error(r, 'File too large')
    assert not list(tmp_path.iterdir())

# --- 7: config gaps, from the command line ------------------------------------------------------------------------------

@pytest.mark.parametrize('args,contains', [
    (['train.lr=1e400'], 'train.lr must be a finite number'),
    (['train.lr=.inf'], 'train.lr must be a finite number'),
    (['data.t_end=.inf'], 'data.t_end must be a finite number'),
    (['data.nu=[.nan]'], 'data.nu[0] must be a finite number'),
    (['data.dt_out=0.03'], 'data.dt_out=0.03 does not divide data.t_end'),
    (['stages.operator.rollout_horizons=[]', 'stages.operator.horizon_epochs=[]'], 'rollout_horizons must list at least one'),
    ([f'seed={10**30}'], 'seed must be an integer'),
    ([f'latent.dim={10**30}'], 'latent.dim must be an integer'),
    ([f'data.n_traj={10**30}'], 'data.n_traj must be an integer'),
    (['data.t_down=1000'], 'data.t_down=1000'),
    (['data.initial_step=1000'], 'data.initial_step=1000'),
    (['eval.baselines=[bogus]'], 'eval.baselines[0] must be one of persistence, fno'),
    (['--config', 'edm_tiny', '--stage', 'bogus'], "stage 'bogus' is not one of all (task edm)"),
    (['name=../escape'], "name='../escape' must be a file-name part"),
])
def test_config_gaps(args, contains, tmp_path):
    one_line_error(run(*TRAIN, *args, f'run.out_dir={tmp_path}/runs'), contains)
    assert not (tmp_path/'runs').exists()

@pytest.mark.parametrize('content,contains', [
    (b'', ['holds no settings', 'c.yaml']),
    (b'name: "bad\\0name"\n', ['name must be a string without NUL bytes']),
    ('name: caf\xe9\n'.encode('latin-1'), ['is not UTF-8 text', 'c.yaml']),
    (b'include: burgers_tiny\ntrain: {lrr: 1}\n', ["unknown key 'train.lrr'", 'c.yaml']),
])
def test_bad_config_files(content, contains, tmp_path):
    (tmp_path/'c.yaml').write_bytes(content)
    one_line_error(run(*TRAIN, '--config', tmp_path/'c.yaml', f'run.out_dir={tmp_path}/runs'), *contains)

def test_bad_key_in_included_file(tmp_path):
    (tmp_path/'base.yaml').write_text('include: burgers_tiny\ndata: {n_trajs: 3}\n')
    (tmp_path/'top.yaml').write_text('include: base.yaml\n')
    one_line_error(run(*TRAIN, '--config', tmp_path/'top.yaml'), 'base.yaml', "unknown key 'data.n_trajs'")

# --- 8: one owner per run folder ----------------------------------------------------------------------------------------

def test_second_copy_of_a_run_is_refused(data, tmp_path):
    out = tmp_path/'runs'
    rd = Path(run(sys.executable, '-c', 'from ups_nb.config import load_config; from ups_nb.runs import run_dir;'
                  f'print(run_dir(load_config("burgers_tiny", ["data.path={data}", "run.out_dir={out}"])))').stdout.strip())
    holder = subprocess.Popen([sys.executable, '-c', f'import time; from ups_nb.runs import lock_run; lock_run({str(rd)!r}); print("held", flush=True); time.sleep(120)'],
                              stdout=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    try:
        rd.mkdir(parents=True, exist_ok=True)
        assert holder.stdout.readline().strip() == 'held'
        one_line_error(run(*tiny(data, out)), f'run folder {rd} is in use by pid {holder.pid}')
        assert not (rd/'log.jsonl').exists()
    finally: holder.kill(); holder.wait()
    ok(run(*tiny(data, out, '--stage', 'operator')))      # the holder died: its lock went with it

def test_study_trainers_die_with_the_study(tmp_path):
    "A study process killed outright (SIGKILL: no `finally` runs) takes its trainers with it; they resume from their checkpoints next time."
    code = ("import sys; from ups_nb.analysis import run_study; "
            f"run_study(dict(orphan=['edm_tiny', 'train.max_steps=100000', 'data.path={tmp_path}/ns.h5']), seeds=(0,), cwd=sys.argv[1], jobs=1)")
    study = subprocess.Popen([sys.executable, '-c', code, str(tmp_path)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def trainers():
        out = subprocess.run(['pgrep', '-f', f'data.path={tmp_path}/ns.h5'], capture_output=True, text=True).stdout.split()
        return [int(p) for p in out if int(p) != study.pid]
    try:
        for _ in range(120):
            if trainers(): break
            time.sleep(0.5)
        assert trainers(), 'the study started no trainer'
        study.kill(); study.wait()
        for _ in range(40):
            if not trainers(): break
            time.sleep(0.5)
        assert not trainers(), 'a trainer outlived its killed study'
    finally:
        for p in trainers(): os.kill(p, signal.SIGKILL)
