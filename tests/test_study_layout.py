"""The reference and the study apart: the reference's files never import the study, no study file is over 500
lines, and the study's modules import each other without a cycle."""
import ast
import glob
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = ['model.py', 'mup.py', 'kernel.py', 'fused_ops.py', 'training.py', 'train.py', 'sample.py',
             'prepare_data.py', 'configurator.py', 'coord_check.py']
STUDY = sorted(glob.glob(os.path.join(ROOT, 'study', '**', '*.py'), recursive=True))


def imports(path):
    """The modules a file imports, as written (absolute names)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_the_reference_never_imports_the_study():
    assert all(os.path.exists(os.path.join(ROOT, f)) for f in REFERENCE)
    found = {f: sorted(n for n in imports(os.path.join(ROOT, f)) if n == 'study' or n.startswith('study.'))
             for f in REFERENCE}
    assert not any(found.values()), found
    assert not os.path.exists(os.path.join(ROOT, 'sweep.py')) and not os.path.exists(os.path.join(ROOT, 'experiments'))


def test_no_study_file_is_over_500_lines():
    assert len(STUDY) > 8
    lengths = {os.path.relpath(f, ROOT): sum(1 for _ in open(f)) for f in STUDY}
    assert max(lengths.values()) <= 500, {f: n for f, n in lengths.items() if n > 500}


def test_the_study_has_no_import_cycle():
    modules = {os.path.relpath(f, ROOT)[:-3].replace(os.sep, '.'): f for f in STUDY}
    deps = {m: {n for n in imports(f) if n in modules and n != m} for m, f in modules.items()}
    done, path = set(), []

    def visit(m):
        assert m not in path, f"import cycle: {' -> '.join(path[path.index(m):] + [m])}"
        if m in done:
            return
        path.append(m)
        for n in deps[m]:
            visit(n)
        path.pop()
        done.add(m)
    for m in modules:
        visit(m)
    assert deps['study.sweep'] >= {'study.grid', 'study.pool', 'study.optima'}  # the check sees the imports


SCRIPTS = ['study.sweep', 'study.tune', 'study.bench', 'study.report', 'study.experiments.fla_comparison.fla_warm',
           'study.experiments.launch_configs.kernel_profile', 'study.experiments.launch_configs.launch_sweep',
           'study.experiments.sgd_coord_drift.sgd_drift', 'study.experiments.sgd_depth_vectors.grad_scale',
           'study.experiments.sweep_throughput.sweep_overhead', 'study.experiments.why_mup_lost_to_sp.transfer_tables',
           'study.experiments.why_mup_lost_to_sp.width_diagnostics']


def test_every_study_script_is_configured_one_way(monkeypatch, capsys):
    """Every script of the study takes config files and --key=value (configurator.py): --help lists its
    DEFAULTS, each key's meaning a comment on the line that defines it."""
    import importlib
    import sys
    mains = [f for f in STUDY if 'def main(' in open(f).read()]
    assert sorted(os.path.relpath(f, ROOT)[:-3].replace(os.sep, '.') for f in mains) == sorted(SCRIPTS)
    for name in SCRIPTS:
        module = importlib.import_module(name)
        source = open(module.__file__).read()
        assert 'argparse' not in source and 'sys.argv[1' not in source.replace('sys.argv[1:] if argv', ''), name
        monkeypatch.setattr(sys, 'argv', [name, '--help'])
        try:
            module.main()
        except SystemExit as e:
            assert e.code in (0, None), name
        listed = capsys.readouterr().out
        assert all(f"  {k} " in listed for k in module.DEFAULTS), name
        lines = source.splitlines()
        tree = ast.parse(source)
        (node,) = [n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], 'id', '') == 'DEFAULTS']
        for kw in node.value.keywords:
            if kw.arg:
                assert '#' in lines[kw.value.end_lineno - 1], f"{name}: {kw.arg} has no comment saying what it is"
