"""The docs a user follows: every command that README.md, docs/ and the study's NOTES.md quote runs a script that
exists with keys it has (parsed as the script parses them, nothing run past its settings); every relative link
lands on a file and heading; no link points at a line number; the README's first screen holds the figure and the
five commands, and after each of its training commands its sample command reads the folder that run wrote. CPU,
seconds: no training."""
import contextlib
import glob
import importlib.util
import io
import os
import re
import runpy
import shlex
import sys
import warnings

import pytest

import configurator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = [os.path.join(ROOT, 'README.md'), *sorted(glob.glob(os.path.join(ROOT, 'docs', '*.md'))),
        *sorted(glob.glob(os.path.join(ROOT, 'study', '**', 'NOTES.md'), recursive=True))]
FENCE = re.compile(r'^```(\w*)\n(.*?)^```', re.S | re.M)
SHELLS = ('', 'bash', 'sh', 'shell')
PLACEHOLDER = re.compile(r'\$|…|\.\.\.')  # a value written for the reader to fill in (a shell variable, an ellipsis)


def split_commands(line):
    """One shell line -> its commands: split at ; && || outside quotes, a # comment dropped, ( ) around a
    subshell stripped."""
    out, cur, quote, i = [], '', None, 0
    while i < len(line):
        c = line[i]
        if quote:
            quote = None if c == quote else quote
        elif c in '\'"':
            quote = c
        elif c == '#' and (not cur or cur[-1].isspace()):
            break
        elif c == ';' or line[i:i + 2] in ('&&', '||'):
            out.append(cur)
            cur, i = '', i + (1 if c == ';' else 2)
            continue
        cur += c
        i += 1
    return [c.strip().strip('()').strip() for c in out + [cur] if c.strip().strip('()').strip()]


def expand(command, variables):
    return re.sub(r'\$\{?(\w+)\}?', lambda m: variables.get(m[1], m[0]), command)


def commands(path):
    """(command, where) for every command the file quotes: the lines of its shell code blocks (continuations
    joined, NAME="..." assignments expanded in what follows) and its inline code in prose."""
    text = open(path, encoding='utf-8').read()
    variables, found = {}, []
    for lang, body in FENCE.findall(text):
        if lang not in SHELLS:
            continue
        for line in body.replace('\\\n', ' ').splitlines():
            for c in split_commands(line):
                m = re.fullmatch(r'(\w+)=(.*)', c)
                if m:
                    variables[m[1]] = expand(' '.join(shlex.split(m[2])), variables)
                else:
                    found.append((expand(c, variables), f"{os.path.relpath(path, ROOT)}: {line.strip()[:60]}"))
    prose = FENCE.sub('', text).replace('\n', ' ')
    for span in re.findall(r'`([^`]+)`', prose):
        for c in split_commands(span):
            found.append((expand(c, variables), f"{os.path.relpath(path, ROOT)}: `{span[:60]}`"))
    return [(c, where) for c, where in found if re.match(r'(python|torchrun)\s', c)]


class Settings(Exception):
    """Raised in place of --help's listing: carries the script's settings."""


@pytest.fixture(scope='module')
def settings():
    """{script or module: its settings as its configurator call sees them}, read by running the script with
    --help and stopping where configurator.py would list them."""
    cache = {}

    def get(target):
        if target not in cache:
            def capture(config, source):
                raise Settings({k: config[k] for k in configurator.config_keys(config)})
            old, argv, cwd = configurator._print_help, sys.argv, os.getcwd()
            configurator._print_help, sys.argv = capture, [target, '--help']
            try:
                os.chdir(ROOT)
                with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                    warnings.simplefilter('ignore')
                    if target.endswith('.py'):
                        runpy.run_path(os.path.join(ROOT, target), run_name='__main__')
                    else:
                        runpy.run_module(target, run_name='__main__', alter_sys=True)
                raise AssertionError(f"{target} never reached its settings with --help")
            except Settings as s:
                cache[target] = s.args[0]
            finally:
                configurator._print_help, sys.argv = old, argv
                os.chdir(cwd)
        return cache[target]
    return get


def target_of(words):
    """(script or module, its arguments) of a command, or None for one that runs no script of this repo."""
    words = [w for w in words if not re.fullmatch(r'\w+=\S*', w)]  # VAR=value before the program
    if words[0] == 'torchrun':  # its launcher's options, then the script
        i = next((i for i, w in enumerate(words) if w.endswith('.py')), None)
        return None if i is None else (words[i], words[i + 1:])
    if words[1] == '-m':  # python -m pytest, python -m pip: not this repo's
        return (words[2], words[3:]) if words[2].split('.')[0] == 'study' else None
    if words[1].startswith('-'):  # python -c ...
        return None
    return words[1], words[2:]


def configure(args, config):
    """apply_config as the script would take args, from the repository's root (config files are relative to it)."""
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        return configurator.apply_config(args, config, verbose=False)
    finally:
        os.chdir(cwd)


def test_the_docs_quote_commands():
    found = {os.path.basename(p) for p in DOCS for _ in commands(p)}
    assert {'README.md', 'transfer.md', 'benchmarks.md', 'NOTES.md'} <= found
    assert len([c for p in DOCS for c in commands(p)]) > 100


def test_every_quoted_command_runs_a_script_with_keys_it_has(settings):
    """A script or module that exists; each argument a config file that applies or a --key=value of its settings
    whose value parses, as the script itself would take it (a bare --plot or --check where the script takes one)."""
    bad = []
    for path in DOCS:
        for command, where in commands(path):
            target = target_of(shlex.split(command))
            if target is None:
                continue
            script, args = target
            exists = os.path.exists(os.path.join(ROOT, script)) if script.endswith('.py') else \
                importlib.util.find_spec(script) is not None
            if not exists:
                bad.append(f"{where}: no {script}")
                continue
            source = open(os.path.join(ROOT, script) if script.endswith('.py') else
                          importlib.util.find_spec(script).origin).read()
            config = dict(settings(script))
            parsed = []
            for a in args:
                if a in ('-h', '--help') or f"'{a}' in argv" in source:
                    continue
                key, _, value = a.partition('=')
                if not PLACEHOLDER.search(a):
                    parsed.append(a)
                elif a.startswith('--') and key[2:] not in config:
                    bad.append(f"{where}: {script} has no key {key[2:]!r}")
            try:
                configure(parsed, config)
            except configurator.ConfigError as e:
                bad.append(f"{where}: {e}")
    assert not bad, '\n'.join(bad)


def test_a_wrong_key_or_file_in_a_quoted_command_is_caught(settings, tmp_path):
    """The check above can fail: a misspelt key, a stale command and a missing config file are each reported."""
    doc = tmp_path / 'doc.md'
    doc.write_text("```bash\nP=\"python -m study.sweep config/sweep_paper.py\"\n$P --widht=256\n```\n"
                   "and `python train.py config/nope.py` and `python sweep.py --plot`\n")
    got = commands(str(doc))
    assert [c for c, _ in got] == ['python -m study.sweep config/sweep_paper.py --widht=256',
                                   'python train.py config/nope.py', 'python sweep.py --plot']
    with pytest.raises(configurator.ConfigError, match='widht'):
        configure(['--widht=256'], dict(settings('study.sweep')))
    with pytest.raises(configurator.ConfigError, match='nope'):
        configure(['config/nope.py'], dict(settings('train.py')))
    assert not os.path.exists(os.path.join(ROOT, 'sweep.py'))


def slug(heading):
    """A heading's anchor as GitHub writes it."""
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def test_every_relative_link_lands_and_none_points_at_a_line():
    bad = []
    for path in DOCS:
        text = FENCE.sub('', open(path, encoding='utf-8').read())
        for target in re.findall(r'\]\(([^)\s]+)\)', text):
            if re.match(r'https?:', target):
                continue
            file, _, anchor = target.partition('#')
            dest = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
            if re.fullmatch(r'L\d+(-L\d+)?', anchor):
                bad.append(f"{os.path.relpath(path, ROOT)}: {target} links to a line number")
            elif not os.path.exists(dest):
                bad.append(f"{os.path.relpath(path, ROOT)}: {target}: no such file")
            elif anchor:
                heads = {slug(h) for h in re.findall(r'^#+ (.*)$', FENCE.sub('', open(dest, encoding='utf-8').read()),
                                                      re.M)}
                if anchor not in heads:
                    bad.append(f"{os.path.relpath(path, ROOT)}: {target}: no such heading")
    assert not bad, '\n'.join(bad)


def test_the_readme_opens_with_the_figure_and_the_five_commands():
    top = ''.join(open(os.path.join(ROOT, 'README.md'), encoding='utf-8').readlines()[:30])
    for needle in ('![', 'assets/lr_sweep_paper.png', 'pip install -r requirements.txt',
                   'pip install torch --index-url https://download.pytorch.org/whl/cpu',
                   'python train.py --width=768 --mup=True', 'python sample.py', 'python -m pytest -q tests',
                   'python train.py config/demo.py', 'python sample.py --out_dir=out-demo'):
        assert needle in top, needle
    assert sum(1 for _ in open(os.path.join(ROOT, 'README.md'), encoding='utf-8')) <= 220
    assert sum(sum(1 for _ in open(p, encoding='utf-8')) for p in glob.glob(os.path.join(ROOT, 'docs', '*.md'))) <= 900


def test_each_readme_training_command_has_a_sample_command_for_its_folder(settings):
    """The out_dir a README training command writes (its config files and keys applied to train.py's settings) is
    the one some README sample command reads."""
    readme = os.path.join(ROOT, 'README.md')
    runs, reads = [], set()
    for command, where in commands(readme):
        script, args = target_of(shlex.split(command)) or (None, [])
        if script in ('train.py', 'sample.py'):
            config = dict(settings(script))
            configure(args, config)
            (runs.append((config['out_dir'], where)) if script == 'train.py' else reads.add(config['out_dir']))
    assert len(runs) >= 3 and 'out-demo' in reads and 'out' in reads
    assert all(out in reads for out, _ in runs), [w for out, w in runs if out not in reads]


def test_the_readme_fla_example_runs():
    """The README's "Use μP in your fla model" code, as written: fla's model at width 768 gets μP's groups."""
    pytest.importorskip('fla')
    code = next(body for lang, body in FENCE.findall(open(os.path.join(ROOT, 'README.md'), encoding='utf-8').read())
                if lang == 'python')
    scope = {}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        exec(compile(code, 'README.md', 'exec'), scope)
    groups = scope['optimizer'].param_groups
    assert sum(len(g['params']) for g in groups) == len(list(scope['model'].parameters()))
    assert {round(g['lr'] / 4.45e-3, 6) for g in groups} >= {1.0, round(256 / 768, 6)}  # vector-like, hidden (1/m)
