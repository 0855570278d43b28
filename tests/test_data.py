"""prepare_data.py: the embedded corpus offline (token count, round trip), char level, --input, the loader,
and FineWeb-Edu-style sharded preparation with resume (through `datasets` on a local jsonl file)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import prepare_data  # noqa: E402
from prepare_data import get_tokenizer, load_split, prepare  # noqa: E402

SHAKESPEARE_TOKENS = 1_566_042  # GPT-2 tokens of data/shakespeare/shakespeare.txt.gz (see its README)
SHAKESPEARE_CHARS = 5_057_324


@pytest.fixture(scope='module')
def text():
    return prepare_data.read_shakespeare()


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    """Both embedded datasets, prepared once per session, outside the repository's data/."""
    d = tmp_path_factory.mktemp('data')
    prepare('shakespeare', data_dir=str(d))
    prepare('shakespeare_char', data_dir=str(d))
    return str(d)


def read_bin(path):
    return np.fromfile(path, dtype=np.uint16)


def test_gpt2_tokenizer_offline():
    tok = get_tokenizer('gpt2')
    assert tok.n_vocab == 50257 and tok.eot_token == 50256
    assert tok.encode_ordinary('Hello world') == [15496, 995]  # GPT-2's ids, as everywhere else
    assert tok.decode(tok.encode('To be, or not to be:\n\n that is')) == 'To be, or not to be:\n\n that is'


def test_shakespeare_token_count_and_round_trip(data_dir, text):
    out = os.path.join(data_dir, 'shakespeare')
    meta = json.load(open(os.path.join(out, 'meta.json')))
    train, val = read_bin(os.path.join(out, 'train.bin')), read_bin(os.path.join(out, 'val.bin'))
    assert len(text) == SHAKESPEARE_CHARS
    assert len(train) + len(val) == SHAKESPEARE_TOKENS  # the cut leaves the tokenisation unchanged
    assert (meta['train_tokens'], meta['val_tokens']) == (len(train), len(val))
    assert meta['vocab_size'] == 50257 and meta['tokenizer'] == 'gpt2'
    assert 0.89 < len(train) / SHAKESPEARE_TOKENS < 0.91
    tok = get_tokenizer('gpt2')
    assert tok.decode(train.tolist()) + tok.decode(val.tolist()) == text
    # a slice of the stored tokens decodes to the text at that place
    piece = tok.decode(train[100_000:100_500].tolist())
    assert len(piece) > 1000 and piece in text
    assert get_tokenizer('shakespeare', data_dir=data_dir).n_vocab == 50257


def test_split_is_at_a_line_boundary(data_dir, text):
    n = json.load(open(os.path.join(data_dir, 'shakespeare', 'meta.json')))['train_chars']
    assert text[n - 1] == '\n' and not text[n].isspace()
    assert abs(n / len(text) - 0.9) < 0.001


def test_char_level(data_dir, text):
    out = os.path.join(data_dir, 'shakespeare_char')
    meta = json.load(open(os.path.join(out, 'meta.json')))
    assert meta['itos'] == sorted(set(text)) and meta['vocab_size'] == len(set(text)) == 84
    assert all(meta['stoi'][c] == i for i, c in enumerate(meta['itos']))
    ids = np.concatenate([read_bin(os.path.join(out, 'train.bin')), read_bin(os.path.join(out, 'val.bin'))])
    assert len(ids) == SHAKESPEARE_CHARS
    tok = get_tokenizer('shakespeare_char', data_dir=data_dir)
    assert tok.decode(ids[:5000]) == text[:5000] and tok.decode(ids) == text
    assert tok.encode('ROMEO') == [meta['stoi'][c] for c in 'ROMEO']


def test_input_file(tmp_path):
    lines = [f"line {i}: the quick brown fox\n" for i in range(200)]
    src = tmp_path / 'mine.txt'
    src.write_text(''.join(lines))
    out = prepare(input=str(src), data_dir=str(tmp_path / 'data'))
    assert out == str(tmp_path / 'data' / 'mine')
    tok = get_tokenizer('gpt2')
    train, val = read_bin(os.path.join(out, 'train.bin')), read_bin(os.path.join(out, 'val.bin'))
    assert tok.decode(train.tolist()) == ''.join(lines[:180]) and tok.decode(val.tolist()) == ''.join(lines[180:])
    out = prepare(input=str(src), name='mine_char', tokenizer='char', data_dir=str(tmp_path / 'data'))
    tok = get_tokenizer('mine_char', data_dir=str(tmp_path / 'data'))
    assert tok.decode(read_bin(os.path.join(out, 'train.bin'))) == ''.join(lines[:180])


def test_command_line(tmp_path):
    src = tmp_path / 'a.txt'
    src.write_text('hello there\nGeneral Kenobi\n' * 50)
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'prepare_data.py'), f'--input={src}', '--name=cli',
                        '--tokenizer=char', f'--data_dir={tmp_path}'], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert json.load(open(tmp_path / 'cli' / 'meta.json'))['vocab_size'] == len(set('hello there\nGeneral Kenobi\n'))
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'prepare_data.py'), '--datset=x'],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode != 0 and "'dataset'" in r.stderr and 'Traceback' not in r.stderr


def test_ensure_prepared(tmp_path, capsys):
    out = prepare_data.ensure_prepared('shakespeare_char', data_dir=str(tmp_path))
    assert 'not prepared yet' in capsys.readouterr().out
    assert os.path.exists(os.path.join(out, 'train.bin'))
    assert prepare_data.ensure_prepared('shakespeare_char', data_dir=str(tmp_path)) == out  # no work twice
    assert capsys.readouterr().out == ''
    with pytest.raises(SystemExit) as e:
        prepare_data.ensure_prepared('fineweb_edu', data_dir=str(tmp_path))
    assert 'python prepare_data.py --dataset=fineweb_edu' in str(e.value.code)
    with pytest.raises(SystemExit) as e:
        prepare_data.ensure_prepared('my_corpus', data_dir=str(tmp_path))
    assert '--input=' in str(e.value.code) and '--name=my_corpus' in str(e.value.code)
    with pytest.raises(SystemExit) as e:
        prepare_data.ensure_prepared('shakespeare_chr', data_dir=str(tmp_path))
    assert "Did you mean 'shakespeare_char'?" in str(e.value.code)


def test_load_split_single_file(data_dir):
    s = load_split(os.path.join(data_dir, 'shakespeare'), 'val')
    raw = read_bin(os.path.join(data_dir, 'shakespeare', 'val.bin'))
    assert len(s) == len(raw) and np.array_equal(s[10:20], raw[10:20])
    w = s.sample(4, 32, torch.Generator().manual_seed(0))
    assert w.shape == (4, 33) and w.dtype == torch.int64
    ix = torch.randint(len(s) - 32, (4,), generator=torch.Generator().manual_seed(0)).tolist()
    assert all(np.array_equal(w[b].numpy(), raw[i:i + 33]) for b, i in enumerate(ix))


# ---------------------------------------------------------------------------------------------------
# FineWeb-Edu-style preparation, on a local jsonl file through `datasets` (no network)

@pytest.fixture(scope='module')
def docs_jsonl(tmp_path_factory, text):
    os.environ.setdefault('HF_DATASETS_OFFLINE', '1')  # never reach for the hub in tests
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    pytest.importorskip('datasets')
    rng = np.random.default_rng(0)
    docs = []
    for _ in range(120):
        a, n = int(rng.integers(len(text) - 3000)), int(rng.integers(1, 2500))
        docs.append(text[a:a + n])
    docs[5] = ''  # an empty document still gets its <|endoftext|>
    path = tmp_path_factory.mktemp('src') / 'docs.jsonl'
    path.write_text(''.join(json.dumps({'text': d, 'id': i}) + '\n' for i, d in enumerate(docs)))
    tok = get_tokenizer('gpt2')
    stream = np.concatenate([[tok.eot_token] + tok.encode_ordinary(d) for d in docs]).astype(np.uint16)
    return str(path), stream


def fineweb(out, src, **kw):
    settings = dict(source=src, max_tokens=40_000, val_tokens=6_000, shard_tokens=4_000, num_proc=1)
    settings.update(kw)
    return prepare_data.prepare_fineweb(str(out), **settings)


def shard_bytes(out):
    d = os.path.join(out, 'shards')
    return {f: open(os.path.join(d, f), 'rb').read() for f in sorted(os.listdir(d)) if f.endswith('.bin')}


def test_fineweb_shards(tmp_path, docs_jsonl):
    src, stream = docs_jsonl
    assert len(stream) > 40_000  # the budget, not the source, ends this preparation
    out = fineweb(tmp_path / 'fw', src)
    meta = json.load(open(os.path.join(out, 'meta.json')))
    assert meta['shards']['val'] == ['val_000000.bin', 'val_000001.bin']  # 4000 + 2000 tokens
    assert len(meta['shards']['train']) == 9 and (meta['train_tokens'], meta['val_tokens']) == (34_000, 6_000)
    assert prepare_data.is_prepared(out) and meta['vocab_size'] == 50257
    # the shards are the token stream [EOT] doc0 [EOT] doc1 ..., cut at the budget
    val = np.concatenate([read_bin(os.path.join(out, 'shards', f)) for f in meta['shards']['val']])
    train = np.concatenate([read_bin(os.path.join(out, 'shards', f)) for f in meta['shards']['train']])
    assert np.array_equal(val, stream[:6_000]) and np.array_equal(train, stream[6_000:40_000])
    assert os.path.getsize(os.path.join(out, 'shards', 'train_000008.bin')) == 2 * 2_000  # the last, shorter


def test_fineweb_resume_gives_the_same_bytes(tmp_path, docs_jsonl):
    src, _ = docs_jsonl
    whole = shard_bytes(fineweb(tmp_path / 'a', src))
    out = str(tmp_path / 'b')
    fineweb(out, src, max_shards=3)  # "interrupted" after 3 shards, mid-document
    assert len(shard_bytes(out)) == 3 and not prepare_data.is_prepared(out)
    state = json.load(open(os.path.join(out, 'shards', 'state.json')))
    assert state['offset'] > 0  # stopped mid-document: the resume must skip part of one
    with pytest.raises(SystemExit):
        prepare_data.ensure_prepared('b', data_dir=str(tmp_path))  # unfinished data is not used
    # what a crash leaves behind: a half-written temporary file, and a shard renamed just before the
    # state was saved (here garbage): both are written again
    open(os.path.join(out, 'shards', 'train_000002.bin.tmp'), 'wb').write(b'\1' * 100)
    open(os.path.join(out, 'shards', 'train_000001.bin'), 'wb').write(b'\2' * 100)
    fineweb(out, src, max_shards=4, num_proc=2)  # resume, in 2 worker processes, and stop again
    fineweb(out, src)
    assert shard_bytes(out) == whole and prepare_data.is_prepared(out)
    assert not [f for f in os.listdir(os.path.join(out, 'shards')) if f.endswith('.tmp')]
    fineweb(out, src)  # a finished preparation is left as it is
    assert shard_bytes(out) == whole
    with pytest.raises(SystemExit) as e:  # other settings would mix two layouts
        fineweb(out, src, shard_tokens=5_000)
    assert 'shard_tokens' in str(e.value.code)


def test_fineweb_source_runs_out(tmp_path, docs_jsonl):
    src, stream = docs_jsonl
    out = fineweb(tmp_path / 'fw', src, max_tokens=10**9, val_tokens=10_000, shard_tokens=50_000)
    meta = json.load(open(os.path.join(out, 'meta.json')))
    assert meta['docs'] == 120 and meta['val_tokens'] + meta['train_tokens'] == len(stream)
    train = load_split(out, 'train')
    assert np.array_equal(train[0:len(train)], stream[10_000:])
    with pytest.raises(SystemExit):
        fineweb(tmp_path / 'small', src, max_tokens=10**9, val_tokens=10**8)


def test_sharded_loader_windows(tmp_path, docs_jsonl):
    src, stream = docs_jsonl
    out = fineweb(tmp_path / 'fw', src)
    train, val = load_split(out, 'train'), load_split(out, 'val')
    ref = stream[6_000:40_000]
    assert len(train) == len(ref) and len(val) == 6_000
    for i in (0, 3_990, 3_999, 4_000, 11_000, len(ref) - 65):  # windows inside and across shard boundaries
        assert np.array_equal(train[i:i + 65], ref[i:i + 65])
    w = train.sample(16, 512, torch.Generator().manual_seed(1))
    ix = torch.randint(len(ref) - 512, (16,), generator=torch.Generator().manual_seed(1)).tolist()
    assert w.shape == (16, 513) and w.dtype == torch.int64
    assert all(np.array_equal(w[b].numpy(), ref[i:i + 513]) for b, i in enumerate(ix))
    with pytest.raises(ValueError):
        val.sample(1, 6_000)
