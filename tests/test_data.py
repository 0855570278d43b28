"""prepare_data.py: the embedded corpus offline (token count, round trip), char level, --input, the loader,
FineWeb-Edu-style sharded preparation with resume (on a local jsonl file, no `datasets` needed), and the
gutenberg books (a tiny archive built here; the shipped archive against its manifest)."""
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import prepare_data
import prepare_fineweb  # noqa: E402
import prepare_gutenberg  # noqa: E402
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


def test_preparing_again_unfinishes_the_folder_first(tmp_path, monkeypatch):
    """A preparation that dies between the new train.bin and the new meta.json leaves a folder marked unfinished,
    never new tokens under the old meta.json's counts."""
    text = ''.join(f"line {i}: the quick brown fox\n" for i in range(200))
    out = prepare_data.prepare_text(text, str(tmp_path / 'mine'))
    real = prepare_data.atomic_write

    def dies_at_val(path, data):
        if path.endswith('val.bin'):
            raise KeyboardInterrupt
        real(path, data)
    monkeypatch.setattr(prepare_data, 'atomic_write', dies_at_val)
    with pytest.raises(KeyboardInterrupt):
        prepare_data.prepare_text(text * 2, out)
    assert not os.path.exists(os.path.join(out, 'meta.json'))


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = str(tmp_path / 'f.txt')
    prepare_data.atomic_write(path, 'old')
    with pytest.raises(OSError):
        with prepare_data.replacing(path) as tmp, open(tmp, 'w') as f:
            f.write('half of the new')
            raise OSError(28, 'No space left on device')
    assert open(path).read() == 'old' and os.listdir(tmp_path) == ['f.txt']


def test_a_split_cut_short_is_refused(tmp_path):
    text = ''.join(f"line {i}: the quick brown fox\n" for i in range(200))
    out = prepare_data.prepare_text(text, str(tmp_path / 'mine'))
    assert len(load_split(out, 'train')) == json.load(open(os.path.join(out, 'meta.json')))['train_tokens']
    with open(os.path.join(out, 'train.bin'), 'r+b') as f:
        f.truncate(os.path.getsize(os.path.join(out, 'train.bin')) - 3)
    with pytest.raises(ValueError, match='prepare it again'):
        load_split(out, 'train')


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
    assert 'python prepare_fineweb.py' in str(e.value.code)
    with pytest.raises(SystemExit) as e:
        prepare_data.ensure_prepared('my_corpus', data_dir=str(tmp_path))
    assert '--input=' in str(e.value.code) and '--name=my_corpus' in str(e.value.code)
    with pytest.raises(SystemExit) as e:
        prepare_data.ensure_prepared('shakespeare_chr', data_dir=str(tmp_path))
    assert "Did you mean 'shakespeare_char'?" in str(e.value.code)
    assert 'Prepared in' in str(e.value.code) and 'gutenberg' in str(e.value.code)  # what exists, listed


@pytest.mark.parametrize('content, args, words', [
    (b'', [], ['0 train and 0 val tokens', '2 × block_size']),
    (b'hello world\n' * 5, [], ['train and', 'val tokens', '2 × block_size']),
    (b'x' * 5000 + b'caf\xe9\n', [], ["byte b'\\xe9' at offset 5,003", '--encoding=latin-1', '--errors=replace']),
    (b'x', ['--encoding=klingon'], ['klingon', '--encoding takes']),
])
def test_input_that_cannot_make_a_dataset_gets_one_line(tmp_path, content, args, words):
    src = tmp_path / 'bad.txt'
    src.write_bytes(content)
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'prepare_data.py'), f'--input={src}', *args,
                        f'--data_dir={tmp_path / "data"}'], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode != 0 and 'Traceback' not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert all(w in r.stderr for w in words), r.stderr
    assert not os.path.exists(tmp_path / 'data' / 'bad' / 'meta.json')


def test_input_in_another_encoding(tmp_path):
    src = tmp_path / 'latin.txt'
    src.write_bytes(('café au lait\r\n' * 400).encode('latin-1'))
    out = prepare(input=str(src), encoding='latin-1', data_dir=str(tmp_path / 'data'))
    text = get_tokenizer('gpt2').decode(read_bin(os.path.join(out, 'train.bin')).tolist())
    assert text.startswith('café au lait\ncafé')  # decoded, with text mode's newlines
    out = prepare(input=str(src), name='replaced', errors='replace', data_dir=str(tmp_path / 'data'))
    assert '\ufffd' in get_tokenizer('gpt2').decode(read_bin(os.path.join(out, 'train.bin')).tolist())


def test_load_split_single_file(data_dir):
    s = load_split(os.path.join(data_dir, 'shakespeare'), 'val')
    raw = read_bin(os.path.join(data_dir, 'shakespeare', 'val.bin'))
    assert len(s) == len(raw) and np.array_equal(s[10:20], raw[10:20])
    assert np.array_equal(s[len(raw) - 33:], raw[-33:]) and s[10:20].dtype == np.uint16


# ---------------------------------------------------------------------------------------------------
# FineWeb-Edu-style preparation, on a local jsonl file (no network, no `datasets`)

@pytest.fixture(scope='module')
def docs_jsonl(tmp_path_factory, text):
    os.environ.setdefault('HF_DATASETS_OFFLINE', '1')  # never reach for the hub in tests
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
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
    return prepare_fineweb.prepare_fineweb(str(out), **settings)


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
    assert len(val[5_990:6_010]) == 10  # a slice past the end stops at it, as a numpy array's does


# ---------------------------------------------------------------------------------------------------
# gutenberg: preparation from a tiny corpus built here (same layout as data/gutenberg/), and the shipped
# archive checked against its manifest

TINY_BOOKS = {  # file -> text as shipped; captions in it are removed by the preparation
    'ann_author__first_book__pg1.txt': "CHAPTER I\n\nIt was a dark and stormy night; the rain fell.\n",
    'ann_author__second_book__pg2.txt': ("[Illustration: THE COVER]\n\nThe Second Book\n\nFirst paragraph.\n\n"
                                         "  [Illustration: _A caption over\n   two lines._]\n\n    Second, indented.\n"),
    'bob_writer__third__pg3.txt': "“Why, indeed?” said a Butterfly. Ça va, naïve café.\n" * 40,
    'bob_writer__fourth__pg4.txt': "Tab\tseparated\tand {footnote [Illustrations of it omitted]} kept.\n" * 10,
    'cy_scribe__fifth__pg5.txt': "The end.\n",
}
TINY_CLEAN = dict(TINY_BOOKS)
TINY_CLEAN['ann_author__second_book__pg2.txt'] = "The Second Book\n\nFirst paragraph.\n\n    Second, indented.\n"


def make_corpus(folder, books=TINY_BOOKS, listed=None):
    """folder/books.tar.xz (books/<file> members) and folder/manifest.tsv, like data/gutenberg/; `listed`:
    the books the manifest lists (default: all)."""
    os.makedirs(folder, exist_ok=True)
    rows = ['file\ttitle\tauthor\tbytes\tsha256']
    with tarfile.open(os.path.join(folder, 'books.tar.xz'), 'w:xz') as tf:
        for name, text in books.items():
            data = text.encode('utf-8')
            info = tarfile.TarInfo('books/' + name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    for name in (books if listed is None else listed):
        data = books[name].encode('utf-8') if name in books else b''
        rows.append(f"{name}\t\"A Title\tSomeone\t{len(data)}\t{hashlib.sha256(data).hexdigest()}")
    with open(os.path.join(folder, 'manifest.tsv'), 'w') as f:
        f.write('\n'.join(rows) + '\n')
    return str(folder)


@pytest.fixture(scope='module')
def tiny_corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp('gutenberg'))


def test_strip_captions():
    strip = prepare_gutenberg.strip_captions
    assert strip("a.\n\n  [Illustration: one\n  two]\n\n  b.") == "a.\n\n  b."  # the paragraph break stays
    assert strip("a.\n\n\n[Illustration]\n\n[Picture: x]\n\nb.") == "a.\n\n\nb."  # a run: the wider gap
    assert strip("[Illustration: TITLE]\n\nText") == "Text"
    assert strip("word [Illustration] word") == "word word"
    assert strip("read:\n\n[Illustration: (hand)] TAKE THIS ROAD\n") == "read:\n\nTAKE THIS ROAD\n"
    assert strip("{footnote [Illustrations of it omitted]}") == "{footnote [Illustrations of it omitted]}"
    assert strip("no captions\n\n\n\nhere") == "no captions\n\n\n\nhere"


def test_gutenberg_val_books():
    rows = [dict(file=f'book{i}.txt', bytes=1000) for i in range(100)]
    val = prepare_gutenberg.gutenberg_val_books(rows, 0.05)
    assert len(val) == 5 and set(prepare_gutenberg.gutenberg_val_books(rows[::-1], 0.05)) == set(val)  # by name only
    rows.insert(0, dict(file='big.txt', bytes=9_000))  # too big for 5% of 109,000 bytes with the others
    assert prepare_gutenberg.gutenberg_val_books(rows, 0.05) == val
    assert len(prepare_gutenberg.gutenberg_val_books(rows[:2], 0.05)) == 1  # at least one, however small the share


def test_gutenberg_bpe(tmp_path, tiny_corpus):
    out = prepare_gutenberg.prepare_gutenberg(str(tmp_path / 'g'), 'gpt2', corpus_dir=tiny_corpus, val_fraction=0.3,
                                         num_proc=2)
    meta = json.load(open(os.path.join(out, 'meta.json')))
    val_books = prepare_gutenberg.gutenberg_val_books(prepare_gutenberg.read_manifest(tiny_corpus), 0.3)
    names = list(TINY_BOOKS)
    assert meta['val_books'] == val_books and 1 <= len(val_books) < len(names)
    assert meta['train_books'] == [n for n in names if n not in val_books]  # every book in one split, whole
    tok, eot = get_tokenizer('gpt2'), prepare_data.GPT2_EOT
    for split in ('train', 'val'):
        ids = read_bin(os.path.join(out, f'{split}.bin'))
        expected = np.concatenate([[eot] + tok.encode_ordinary(TINY_CLEAN[n]) for n in meta[f'{split}_books']])
        assert np.array_equal(ids, expected) and meta[f'{split}_tokens'] == len(ids)
        starts = np.cumsum([0] + [meta['book_tokens'][n] for n in meta[f'{split}_books']])[:-1]
        assert np.flatnonzero(ids == eot).tolist() == starts.tolist()  # one EOT, before each book
        assert tok.decode(ids.tolist()) == ''.join('<|endoftext|>' + TINY_CLEAN[n] for n in meta[f'{split}_books'])
        assert meta[f'{split}_chars'] == sum(len(TINY_CLEAN[n]) for n in meta[f'{split}_books'])
    assert meta['vocab_size'] == 50257 and meta['eot_token'] == eot and prepare_data.is_prepared(out)


def test_gutenberg_char(tmp_path, tiny_corpus, monkeypatch):
    monkeypatch.setattr(prepare_gutenberg, 'GUTENBERG', tiny_corpus)  # the "shipped" corpus, for prepare()
    out = prepare('gutenberg', tokenizer='char', data_dir=str(tmp_path))
    assert out == str(tmp_path / 'gutenberg_char')
    meta = json.load(open(os.path.join(out, 'meta.json')))
    sep = prepare_gutenberg.CHAR_EOT
    assert meta['itos'] == sorted(set(''.join(TINY_CLEAN.values())) | {sep})  # train and val alike
    assert meta['eot_char'] == sep and meta['itos'][meta['eot_token']] == sep
    assert meta['val_books'] == prepare_gutenberg.gutenberg_val_books(prepare_gutenberg.read_manifest(tiny_corpus))
    tok = get_tokenizer('gutenberg_char', data_dir=str(tmp_path))
    assert tok.eot_token == meta['eot_token']
    for split in ('train', 'val'):
        ids = read_bin(os.path.join(out, f'{split}.bin'))
        assert tok.decode(ids) == ''.join(sep + TINY_CLEAN[n] for n in meta[f'{split}_books'])
        assert meta[f'{split}_tokens'] == len(ids) == meta[f'{split}_chars'] + len(meta[f'{split}_books'])
    # gutenberg_char is the same dataset by its own name; and the embedded datasets prepare on first use
    assert prepare('gutenberg_char', data_dir=str(tmp_path / 'b')) == str(tmp_path / 'b' / 'gutenberg_char')
    assert read_bin(os.path.join(tmp_path, 'b', 'gutenberg_char', 'val.bin')).tolist() == \
        read_bin(os.path.join(out, 'val.bin')).tolist()
    bpe = prepare_data.ensure_prepared('gutenberg', data_dir=str(tmp_path))
    assert json.load(open(os.path.join(bpe, 'meta.json')))['val_books'] == meta['val_books']  # the same books


def test_gutenberg_damaged_archive(tmp_path):
    data = open(os.path.join(make_corpus(tmp_path / 'good'), 'books.tar.xz'), 'rb').read()

    def fails(folder, *words):
        out = str(tmp_path / 'out' / os.path.basename(folder))
        with pytest.raises(SystemExit) as e:
            prepare_gutenberg.prepare_gutenberg(out, 'gpt2', corpus_dir=folder, val_fraction=0.3, num_proc=1)
        msg = str(e.value.code)
        assert os.path.join(folder, 'books.tar.xz') in msg and 'restore it' in msg, msg
        assert all(w in msg for w in words), msg
        assert not os.path.exists(os.path.join(out, 'meta.json'))  # nothing a trainer would take as prepared

    for name, damaged in (('truncated', data[:len(data) // 2]), ('short_by_one', data[:-1]),
                          ('corrupt', data[:200] + bytes(b ^ 0xFF for b in data[200:260]) + data[260:])):
        folder = make_corpus(tmp_path / name)
        open(os.path.join(folder, 'books.tar.xz'), 'wb').write(damaged)
        fails(folder)
    # a book the manifest lists is not in the archive; one in the archive differs from its manifest entry
    books = dict(TINY_BOOKS)
    del books['bob_writer__third__pg3.txt']
    fails(make_corpus(tmp_path / 'missing', books, listed=list(TINY_BOOKS)), 'bob_writer__third__pg3.txt')
    folder = make_corpus(tmp_path / 'changed')
    path, sha = os.path.join(folder, 'manifest.tsv'), hashlib.sha256(b'The end.\n').hexdigest()
    manifest = open(path).read()
    open(path, 'w').write(manifest.replace(sha, hashlib.sha256(b'The End.\n').hexdigest()))
    fails(folder, 'cy_scribe__fifth__pg5.txt', 'sha256')
    # for the shipped archive the message gives the command that restores it
    hint = prepare_gutenberg._restore_hint(os.path.join(prepare_gutenberg.GUTENBERG, 'books.tar.xz'))
    assert 'git checkout -- data/gutenberg/books.tar.xz' in hint


def test_shipped_gutenberg_matches_its_manifest():
    """Every book of data/gutenberg/books.tar.xz, decompressed, has the size and sha256 manifest.tsv gives,
    and the manifest lists nothing else (not tokenised here: that is the preparation's job)."""
    manifest = prepare_gutenberg.read_manifest(prepare_gutenberg.GUTENBERG)
    assert len(manifest) == 121 and len({r['author'] for r in manifest}) == 36
    found = {}
    with tarfile.open(os.path.join(prepare_gutenberg.GUTENBERG, 'books.tar.xz'), 'r:xz') as tf:
        for member in tf:
            if member.isfile():
                data = tf.extractfile(member).read()
                found[member.name] = (len(data), hashlib.sha256(data).hexdigest())
    assert found == {'books/' + r['file']: (r['bytes'], r['sha256']) for r in manifest}
    val = prepare_gutenberg.gutenberg_val_books(manifest)  # the fixed validation books: about 5% of the bytes
    share = sum(r['bytes'] for r in manifest if r['file'] in val) / sum(r['bytes'] for r in manifest)
    assert len(val) == 10 and 0.045 < share <= 0.05
