"""
Command-line and config-file overrides of a script's settings: the one way every script here is configured
(nanoGPT's "poor man's configurator"). A script writes its settings as plain globals or one dict, each with
its meaning in a comment on its line, then hands them over:

    batch_size = 12              # sequences per micro-batch
    configure(globals())         # python train.py config/demo.py --batch_size=32

Arguments apply in command-line order, later ones win: an argument without a leading `--` is a config file, Python run
with the current values in scope, whose plain names must be existing keys (names starting with `_`, modules and
functions are ignored); `--key=value` sets one key (the value may contain '='), a bare `--key` sets a True/False key to
True. The keys are the names holding int, float, bool, str or None. Each keeps its default's type: an int passes for a
float, an integral float such as 1e4 for an int, bools are True/False, a str key takes the text as written (a number in
a config file becomes its text). `--help` lists every key with its default and the comment on the line that defines it.
A mistake (unknown key, wrong type, missing file) ends the program with one line naming it and the closest valid keys,
never a traceback; `apply_config` raises ConfigError instead, for callers that handle it.
"""
import ast
import difflib
import inspect
import os
import re
import sys

CONFIG_TYPES = (int, float, bool, str, type(None))


class ConfigError(ValueError):
    """A user mistake in the command line or a config file; the message says what to fix."""


def config_keys(config):
    """The keys of `config` that can be overridden: public names holding plain values."""
    return [k for k, v in config.items() if not k.startswith('_') and isinstance(v, CONFIG_TYPES)]


def _unknown_key_error(key, keys, origin):
    close = difflib.get_close_matches(key, sorted(keys), n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return ConfigError(f"unknown config key {key!r} ({origin}).{hint} Run with --help to list the valid keys.")


def _convert(key, value, default, origin):
    """Check/convert a value (already a Python object) to the type of the key's default."""
    expected = type(default)
    if default is None or type(value) is expected:
        return value
    if expected is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)  # a number for a text key (the sweep's comma lists): a list of one
    # bool is a subclass of int, so test it first: True must not pass as an int, nor 1 as a bool
    if expected is not bool and not isinstance(value, bool):
        if expected is float and isinstance(value, int):
            return float(value)
        if expected is int and isinstance(value, float) and value.is_integer():
            return int(value)  # lets max_iters=1e4 through; 1.5 still fails below
    raise ConfigError(f"{key} expects {expected.__name__} (default {default!r}), got {value!r} "
                      f"of type {type(value).__name__} ({origin})")


def _parse(key, text, default, origin):
    """Turn the text of `--key=text` into a value of the key's type."""
    if isinstance(default, bool):
        # literal_eval would also give True/False, but lower case is a common typo worth accepting
        if text.lower() in ('true', 'false'):
            return text.lower() == 'true'
        raise ConfigError(f"{key} expects True or False, got {text!r} ({origin})")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        value = text  # not a Python literal: a bare word like cuda or out-run1
    if isinstance(default, str) and not isinstance(value, str):
        value = text  # for a str key the text itself is the value (--out_dir=2024 means '2024')
    return _convert(key, value, default, origin)


def _apply_file(path, config, keys, verbose):
    try:
        with open(path) as f:
            source = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path!r}: {e.strerror}. Config files are given "
                          f"without '--'; overrides are written --key=value") from None
    scope = {k: config[k] for k in keys}  # config files may read the current values
    try:
        exec(compile(source, path, 'exec'), scope)
    except Exception as e:
        raise ConfigError(f"config file {path} failed: {type(e).__name__}: {e}") from None
    updates = {}  # validate everything before changing anything
    for k, v in scope.items():
        if k.startswith('_') or not isinstance(v, CONFIG_TYPES):
            if k in keys:  # a list for a key that takes '64,128', say: never dropped without a word
                raise ConfigError(f"{k} = {v!r} in config file {path}: give a {type(config[k]).__name__}, "
                                  f"e.g. {k} = {config[k]!r}")
            continue  # helpers, imports, functions
        if k not in keys:
            raise _unknown_key_error(k, keys, f"set in config file {path}")
        updates[k] = _convert(k, v, config[k], f"in config file {path}")
    if verbose:
        print(f"Overriding config with {path}:")
    for k, v in updates.items():
        if verbose and v != config[k]:
            print(f"  {k} = {v!r}")
        config[k] = v
    # the keys the file names (assigns), whatever their values: what apply_config reports as set
    return {t.id for node in ast.walk(ast.parse(source)) if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign))
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(t, ast.Name) and t.id in keys}


def meanings(path):
    """{key: meaning} from a script's source: the comment on the line that sets a key (`key = value  # ...` or a
    dict's `key=value,  # ...`), continued by comment-only lines indented past the line's start."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    out, key, indent = {}, None, 0
    for line in lines:
        m = re.match(r'^(\s*)(\w+)\s*=(?!=)[^#]*#\s?(.*)$', line)
        if m:
            key, indent = m.group(2), len(m.group(1))
            out.setdefault(key, m.group(3).strip())
            continue
        c = re.match(r'^(\s*)#\s?(.*)$', line)
        if key and c and len(c.group(1)) > indent and out.get(key) is not None:
            out[key] += ' ' + c.group(2).strip()
        else:
            key = None
    return out


def _print_help(config, source):
    keys = config_keys(config)  # in definition order
    about = meanings(source)
    print(f"Settings of {os.path.basename(source)} (override with --key=value, or name a config file; later "
          "arguments win):")
    width = max((len(k) for k in keys), default=0)
    vwidth = min(max((len(repr(config[k])) for k in keys), default=0), 24)
    for k in keys:
        print(f"  {k:<{width}} = {config[k]!r:<{vwidth}}  {about.get(k, '')}".rstrip())


def apply_config(args, config, verbose=True, source=None):
    """Apply config files and --key=value overrides in `args`, in order, to the dict `config`. Raises ConfigError for
    any user mistake; `--help` prints the keys with the meanings written beside them in `source` (default: the caller's
    file) and raises SystemExit(0). Returns the set of keys that were set (by a file or an override), whether or not
    their value changed."""
    keys = set(config_keys(config))
    assigned = set()
    for arg in args:
        if arg in ('-h', '--help'):
            _print_help(config, source or inspect.stack()[1].filename)
            raise SystemExit(0)
        if not arg.startswith('--'):
            assigned |= _apply_file(arg, config, keys, verbose)
            continue
        key, sep, text = arg[2:].partition('=')
        if not sep and isinstance(config.get(key), bool) and key in keys:
            sep, text = '=', 'True'  # a bare --flag of a True/False key
        if key not in keys:  # before the form: a misspelt bare flag is a misspelt key
            raise _unknown_key_error(key, keys, f"in {arg!r}")
        if not sep:
            raise ConfigError(f"expected --key=value, got {arg!r}")
        config[key] = _parse(key, text, config[key], f"in {arg!r}")
        assigned.add(key)
        if verbose:
            print(f"Overriding: {key} = {config[key]!r}")
    return assigned


def configure(config, args=None):
    """apply_config on sys.argv[1:] (or `args`) for a script: a user mistake exits with its one line. Returns
    the keys that were set. `config` is a dict, or a script's globals()."""
    try:
        return apply_config(sys.argv[1:] if args is None else args, config, source=inspect.stack()[1].filename)
    except ConfigError as e:
        sys.exit(f"error: {e}")
