"""README.md and the docs front page (nbs/index.ipynb) must both hold the two set-up commands, and .ci/run must call command 2."""
import json, re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def _commands(text):
    return re.findall(r'```bash\n(python3 -m venv .*?)\n```', text)

def test_readme_has_two_commands():
    cmds = _commands((ROOT/'README.md').read_text())
    assert len(cmds) == 2, cmds
    main, tests = cmds
    assert main.endswith('accelerate launch ups_nb/train.py') and 'torch==2.13.0' in main
    assert tests.endswith('pytest -q -n 2') and '.[dev]' in tests

def test_index_matches_readme():
    nb = json.loads((ROOT/'nbs'/'index.ipynb').read_text())
    text = '\n'.join(''.join(c['source']) for c in nb['cells'])
    assert _commands(text) == _commands((ROOT/'README.md').read_text())

def test_ci_runs_readme_command_2():
    tests_cmd = _commands((ROOT/'README.md').read_text())[1]
    ci = (ROOT/'.ci'/'run').read_text().splitlines()
    assert tests_cmd in ci, '.ci/run must call README command 2 verbatim'
