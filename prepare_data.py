"""
Tokenise a dataset into uint16 token files for train.py.

    python prepare_data.py                             # shakespeare: GPT-2 BPE of the corpus shipped in data/
    python prepare_data.py --dataset=shakespeare_char  # the same text, one token per character
    python prepare_data.py --dataset=gutenberg         # 121 public-domain books shipped in data/ (~14M tokens)
    python prepare_data.py --dataset=gutenberg_char    # the same books, one token per character
    python prepare_data.py --input=my.txt [--name=mine] [--tokenizer=char]   # your own text file
    python prepare_data.py --dataset=fineweb_edu --max_tokens=10e9 [--num_proc=16] [--shard_tokens=1e8]

Writes data/<name>/train.bin and val.bin (uint16 token ids, read back with np.memmap as in nanoGPT) and
data/<name>/meta.json (tokenizer, vocab_size, token counts; for char-level data the itos/stoi tables).
meta.json is written last, so its presence means the preparation finished. FineWeb-Edu is too big for
one file and is written as shards: data/fineweb_edu/shards/{train,val}_NNNNNN.bin.

Everything but FineWeb-Edu works offline: the GPT-2 tokenizer is built from the BPE files shipped in
data/gpt2/, never downloaded. vocab_size in meta.json is the tokenizer's (50257 for GPT-2); train.py pads
it for the model (50304).

Python API, for train.py, sample.py and the tests:
    get_tokenizer(name)                     'gpt2', or a prepared dataset's name: .encode(str), .decode(ids)
    prepare(dataset, data_dir='data', ...)  prepare and return the output folder
    ensure_prepared(dataset, data_dir='data')  the folder, preparing an embedded corpus if needed
    load_split(dataset_dir, split)          the tokens of 'train' or 'val' as one sequence (any layout)
"""
import bisect
import functools
import glob
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import sys
import tarfile

import numpy as np

REPO = os.path.dirname(os.path.abspath(__file__))
SHAKESPEARE = os.path.join(REPO, 'data', 'shakespeare', 'shakespeare.txt.gz')
GPT2_FILES = os.path.join(REPO, 'data', 'gpt2')
GUTENBERG = os.path.join(REPO, 'data', 'gutenberg')  # books.tar.xz + manifest.tsv
EMBEDDED = ('shakespeare', 'shakespeare_char', 'gutenberg', 'gutenberg_char')  # need nothing but the repository
VAL_FRACTION = 0.1
GUTENBERG_VAL_FRACTION = 0.05  # of the corpus's bytes, in whole books

# ----------------------------------------------------------------------------------------------------
# tokenizers

# GPT-2's pre-tokenizer regex (tiktoken's "r50k" pattern): splits text into words, numbers, punctuation
# runs and whitespace runs; BPE merges never cross these pieces.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
GPT2_EOT = 50256  # <|endoftext|>, the only special token


def _gpt2_byte_decoder():
    """GPT-2's encoder.json spells bytes as printable unicode chars: printable bytes stand for
    themselves, the other 68 are mapped in order to chr(256), chr(257), ... Return char -> byte."""
    printable = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255]
    others = [b for b in range(256) if b not in printable]
    table = {chr(b): b for b in printable}
    table.update({chr(256 + i): b for i, b in enumerate(others)})
    return table


@functools.lru_cache(maxsize=None)
def gpt2_encoding():
    """tiktoken's 'gpt2' Encoding, built from data/gpt2/ (identical to the downloaded one, but offline).

    In GPT-2's tables a token's id is also its merge rank, so encoder.json alone gives tiktoken's
    mergeable ranks; vocab.bpe (the merge list) is used to check that, which is what tiktoken's own
    loader asserts too."""
    import tiktoken
    byte_of = _gpt2_byte_decoder()
    with gzip.open(os.path.join(GPT2_FILES, 'encoder.json.gz'), 'rt', encoding='utf-8') as f:
        encoder = json.load(f)
    ranks = {bytes(byte_of[c] for c in tok): i for tok, i in encoder.items() if tok != '<|endoftext|>'}
    with gzip.open(os.path.join(GPT2_FILES, 'vocab.bpe.gz'), 'rt', encoding='utf-8') as f:
        merges = f.read().split('\n')[1:-1]  # first line is a version header, last is empty
    assert len(ranks) == 256 + len(merges) == 50256 and encoder['<|endoftext|>'] == GPT2_EOT
    for i, merge in enumerate(merges):
        a, b = merge.split(' ')
        assert ranks[bytes(byte_of[c] for c in a + b)] == 256 + i, f"vocab.bpe disagrees at merge {i}"
    return tiktoken.Encoding(name='gpt2', pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={'<|endoftext|>': GPT2_EOT}, explicit_n_vocab=GPT2_EOT + 1)


class CharTokenizer:
    """One token per character of a fixed alphabet (itos: id -> char)."""
    name = 'char'
    eot_token = None

    def __init__(self, itos):
        self.itos = list(itos)
        self.stoi = {c: i for i, c in enumerate(self.itos)}
        self.n_vocab = len(self.itos)

    def encode(self, text):
        try:
            return [self.stoi[c] for c in text]
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} is not in this char-level vocabulary") from None

    def decode(self, ids):
        return ''.join(self.itos[int(i)] for i in ids)


def get_tokenizer(name, data_dir='data'):
    """'gpt2' -> tiktoken's GPT-2 Encoding; a prepared dataset's name -> the tokenizer in its meta.json.
    Both have .encode(text) -> list of ids, .decode(ids) -> text, .n_vocab and .eot_token (None for char)."""
    if name == 'gpt2':
        return gpt2_encoding()
    meta_path = os.path.join(data_dir, name, 'meta.json')
    if not os.path.exists(meta_path):
        raise ValueError(f"unknown tokenizer {name!r}: expected 'gpt2' or a prepared dataset "
                         f"({meta_path} not found)")
    with open(meta_path) as f:
        meta = json.load(f)
    if meta['tokenizer'] == 'gpt2':
        return gpt2_encoding()
    tok = CharTokenizer(meta['itos'])
    tok.eot_token = meta.get('eot_token')  # gutenberg_char separates its books with a character of its own
    return tok


# ----------------------------------------------------------------------------------------------------
# text files -> train.bin, val.bin, meta.json

def split_point(text, fraction=1 - VAL_FRACTION):
    """Where to cut `text` into train and val: the line start nearest to fraction * len(text) whose
    previous line ends in a visible character and which itself starts with one. GPT-2's pre-tokenizer
    makes such a lone '\\n' its own piece, so the two halves tokenise exactly as the whole text does
    (train + val token counts equal the whole text's). Falls back to the exact fraction if the text
    has no such line boundary."""
    target = int(len(text) * fraction)

    def ok(i):  # i is the index just after a '\n'
        return 2 <= i < len(text) and not text[i - 2].isspace() and not text[i].isspace()

    after, before = text.find('\n', target), text.rfind('\n', 0, target)
    while after != -1 and not ok(after + 1):
        after = text.find('\n', after + 1)
    while before != -1 and not ok(before + 1):
        before = text.rfind('\n', 0, before)
    candidates = [i + 1 for i in (after, before) if i != -1]
    return min(candidates, key=lambda i: abs(i - target)) if candidates else target


def _atomic_write(path, data):
    """Write bytes or str to a temporary name, then rename: a reader never sees half a file."""
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
        f.write(data.encode('utf-8') if isinstance(data, str) else data)
    os.replace(tmp, path)


def to_uint16(ids):
    ids = np.asarray(ids)
    assert ids.size == 0 or (ids.min() >= 0 and ids.max() < 2**16), "token ids must fit in uint16"
    return ids.astype(np.uint16)


def write_meta(out_dir, meta):
    _atomic_write(os.path.join(out_dir, 'meta.json'), json.dumps(meta, indent=1) + '\n')


MIN_TRAIN_BLOCK = 1024  # train.py's default block_size: a split needs block_size + 2 tokens to give one window


def check_split_sizes(source, tokens):
    """Stop before writing a dataset that nothing can train on, and say what train.py's block_size allows."""
    small = min(tokens.values())
    sizes = f"{tokens['train']:,} train and {tokens['val']:,} val tokens"
    if small < 34:  # block_size 32, the smallest context worth training
        raise ValueError(f"{source} gives {sizes}; each split needs at least block_size + 2 tokens "
                         f"({MIN_TRAIN_BLOCK + 2:,} for train.py's default block_size): give a longer text")
    if small < MIN_TRAIN_BLOCK + 2:
        print(f"note: {source} gives {sizes}: train with --block_size={small - 2} or less")


def prepare_text(text, out_dir, tokenizer='gpt2', source=''):
    """Tokenise `text`, cut 90/10 at a line boundary, write train.bin, val.bin and meta.json."""
    meta = dict(tokenizer=tokenizer, source=source, dtype='uint16')
    if tokenizer == 'gpt2':
        tok = gpt2_encoding()
        meta.update(vocab_size=tok.n_vocab, eot_token=GPT2_EOT)
    elif tokenizer == 'char':
        tok = CharTokenizer(sorted(set(text)))  # the alphabet of the whole text, train and val alike
        meta.update(vocab_size=tok.n_vocab, eot_token=None, itos=tok.itos, stoi=tok.stoi)
    else:
        raise ValueError(f"unknown tokenizer {tokenizer!r}: use 'gpt2' or 'char'")
    cut = split_point(text)
    # encode_ordinary: '<|endoftext|>' in the text is plain text, not the special token
    ids = {split: tok.encode_ordinary(part) if tokenizer == 'gpt2' else tok.encode(part)
           for split, part in (('train', text[:cut]), ('val', text[cut:]))}
    check_split_sizes(source or out_dir, {k: len(v) for k, v in ids.items()})
    os.makedirs(out_dir, exist_ok=True)
    for split, part in (('train', text[:cut]), ('val', text[cut:])):
        _atomic_write(os.path.join(out_dir, f'{split}.bin'), to_uint16(ids[split]).tobytes())
        meta[f'{split}_tokens'] = len(ids[split])
        meta[f'{split}_chars'] = len(part)
    write_meta(out_dir, meta)  # last: its presence marks a finished preparation
    print(f"{out_dir}: {meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens, "
          f"{tokenizer} vocab {meta['vocab_size']}")
    return out_dir


def read_shakespeare():
    with gzip.open(SHAKESPEARE, 'rt', encoding='utf-8') as f:
        return f.read()


# ----------------------------------------------------------------------------------------------------
# gutenberg: 121 public-domain books in data/gutenberg/books.tar.xz (provenance: data/gutenberg/README.md)
#
# Each split holds whole books, in manifest order, each preceded by an end-of-text marker: [EOT] book0
# [EOT] book1 ..., as in fineweb_edu. GPT-2 has <|endoftext|> for it; a char vocabulary has no special
# tokens, so there the marker is CHAR_EOT, a control character no book contains, made part of the
# alphabet (meta.json: eot_token, eot_char). Validation is a fixed set of whole books, not the tail of
# one (the model would have trained on that book's first part), chosen from the manifest's byte counts so
# that the BPE and the char datasets hold out the same books.

CHAR_EOT = '\x04'  # ASCII "end of transmission"
# Old illustration captions: "[Illustration]", "[Illustration: _A stern melancholy country._]" (some span
# lines) and, in one book, "[Picture: Book cover]". The \b keeps "[Illustrations of it ...", which is text.
# A run of captions is removed with the whitespace around it; _caption_gap says what stays.
_CAPTION = r'\[(?:Illustration|Picture)\b[^\][]*\]'
CAPTIONS = re.compile(rf'\s*{_CAPTION}(?:\s*{_CAPTION})*[ \t]*(?:\n(?:[ \t]*\n)*)?')


def _caption_gap(m):
    """What replaces a run of captions: as many newlines as the larger of the blank-line runs before and
    after it (so a caption between two paragraphs leaves one paragraph break), a space inside a line,
    nothing at the start of a book. The next line keeps its indentation."""
    s = m.group()
    before, after = s[:len(s) - len(s.lstrip())].count('\n'), s[s.rindex(']') + 1:].count('\n')
    return '' if m.start() == 0 else '\n' * max(before, after) or ' '


def strip_captions(text):
    return CAPTIONS.sub(_caption_gap, text)


def _repo_path(path):
    """path relative to the repository if it is inside it, else absolute."""
    rel = os.path.relpath(os.path.abspath(path), REPO)
    return os.path.abspath(path) if rel.startswith('..') else rel


def _restore_hint(path):
    rel = _repo_path(path)
    return "restore it" if os.path.isabs(rel) else f"restore it with `git checkout -- {rel}`"


def read_manifest(corpus_dir):
    """manifest.tsv: one dict per book (file, title, author, ..., bytes, sha256), in file-name order.
    Split on tabs by hand: a title may start with a quote, which the csv module would take for quoting."""
    path = os.path.join(corpus_dir, 'manifest.tsv')
    if not os.path.exists(path):
        raise SystemExit(f"error: {path} is missing; {_restore_hint(path)}")
    with open(path, encoding='utf-8') as f:
        header, *lines = f.read().splitlines()
    rows = [dict(zip(header.split('\t'), line.split('\t'))) for line in lines if line]
    for row in rows:
        row['bytes'] = int(row['bytes'])
    return rows


def read_gutenberg(corpus_dir):
    """{file: text} of every book of corpus_dir/books.tar.xz, in manifest order, each checked against
    manifest.tsv (size and sha256 of its bytes), illustration captions removed. A truncated or corrupt
    archive, or one that lacks a book, stops with a message naming it: never a silently shorter dataset."""
    archive = os.path.join(corpus_dir, 'books.tar.xz')
    manifest = read_manifest(corpus_dir)

    def fail(why):
        return SystemExit(f"error: {archive} {why}; {_restore_hint(archive)}")
    if not os.path.exists(archive):
        raise fail("is missing")
    raw = {}
    try:
        # Decompressed whole first (60 MB, 1 s): reading the members alone stops at the tar's end and so
        # never reaches the xz footer and its checks.
        with lzma.open(archive) as f:
            tar = io.BytesIO(f.read())
        with tarfile.open(fileobj=tar) as tf:
            for member in tf:
                if member.isfile():
                    raw[os.path.basename(member.name)] = tf.extractfile(member).read()
    except (lzma.LZMAError, EOFError, tarfile.TarError) as e:  # what truncation and corruption raise
        raise fail(f"is damaged or truncated ({type(e).__name__}: {e})") from None
    books = {}
    for row in manifest:
        data = raw.pop(row['file'], None)
        if data is None:
            raise fail(f"lacks {row['file']}, which manifest.tsv lists")
        if len(data) != row['bytes'] or hashlib.sha256(data).hexdigest() != row['sha256']:
            raise fail(f"holds a damaged {row['file']} (its size or sha256 differs from manifest.tsv)")
        books[row['file']] = strip_captions(data.decode('utf-8'))
    if raw:
        raise fail(f"holds {len(raw)} books that manifest.tsv does not list (e.g. {min(raw)})")
    return books


def gutenberg_val_books(manifest, fraction=GUTENBERG_VAL_FRACTION):
    """The validation books: in a fixed pseudo-random order (sha256 of the file name), every book that
    still fits in `fraction` of the corpus's bytes (at least one). From the manifest alone, so the BPE and
    char datasets hold out the same books, and the choice changes only if the books do."""
    if len(manifest) < 2:
        raise ValueError("the corpus needs at least two books: one to train on, one to validate on")
    budget, size, val = fraction * sum(row['bytes'] for row in manifest), 0, set()
    for row in sorted(manifest, key=lambda row: hashlib.sha256(row['file'].encode()).hexdigest()):
        if size + row['bytes'] <= budget or not val:
            val.add(row['file'])
            size += row['bytes']
    return [row['file'] for row in manifest if row['file'] in val]


def _encode_book(item):
    """(index, text) -> (index, [EOT] + GPT-2 tokens of text as uint16); runs in the worker processes."""
    i, text = item
    return i, to_uint16([GPT2_EOT] + gpt2_encoding().encode_ordinary(text))


def encode_books(texts, num_proc):
    """[EOT] + GPT-2 tokens of each text, in order, in num_proc processes, longest text first (so that no
    worker is left with a long book at the end); the progress bar counts characters, for its ETA, and
    shows the tokens so far."""
    import contextlib
    import multiprocessing
    from tqdm import tqdm
    gpt2_encoding()  # built once, before the fork: the workers inherit it
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    jobs = [(i, texts[i]) for i in order]
    out, tokens = [None] * len(texts), 0
    bar = tqdm(total=sum(map(len, texts)), unit='char', unit_scale=True, desc='gutenberg')
    # fork, as in tokenize_stream: spawn would re-import the main module
    pool = multiprocessing.get_context('fork').Pool(num_proc) if num_proc > 1 else contextlib.nullcontext()
    with pool:
        for i, ids in (pool.imap_unordered(_encode_book, jobs) if num_proc > 1 else map(_encode_book, jobs)):
            out[i], tokens = ids, tokens + len(ids)
            bar.update(len(texts[i]))
            bar.set_postfix_str(f'{tokens:,} tokens', refresh=False)
    bar.close()
    return out


def prepare_gutenberg(out_dir, tokenizer='gpt2', corpus_dir=None, val_fraction=GUTENBERG_VAL_FRACTION, num_proc=0):
    """Check, tokenise and split the books of corpus_dir (default: GUTENBERG, the shipped corpus; see the
    comment above) into out_dir/train.bin, val.bin and meta.json (token counts, the books of each split)."""
    corpus_dir = corpus_dir or GUTENBERG
    if tokenizer not in ('gpt2', 'char'):
        raise ValueError(f"unknown tokenizer {tokenizer!r}: use 'gpt2' or 'char'")
    val_books = set(gutenberg_val_books(read_manifest(corpus_dir), val_fraction))
    books = read_gutenberg(corpus_dir)
    files, texts = list(books), list(books.values())
    os.makedirs(out_dir, exist_ok=True)
    if os.path.exists(os.path.join(out_dir, 'meta.json')):
        os.remove(os.path.join(out_dir, 'meta.json'))  # until the new one is written, the folder is unfinished
    meta = dict(tokenizer=tokenizer, source=_repo_path(os.path.join(corpus_dir, 'books.tar.xz')), dtype='uint16')
    if tokenizer == 'gpt2':
        ids = encode_books(texts, num_proc or os.cpu_count())
        meta.update(vocab_size=GPT2_EOT + 1, eot_token=GPT2_EOT)
    else:
        itos = sorted(set(CHAR_EOT).union(*texts))  # one alphabet for train and val alike
        codes = np.array([ord(c) for c in itos], dtype=np.uint32)  # ascending, as itos is sorted
        ids = [to_uint16(np.searchsorted(codes, np.frombuffer((CHAR_EOT + t).encode('utf-32-le'), np.uint32)))
               for t in texts]
        meta.update(vocab_size=len(itos), eot_token=itos.index(CHAR_EOT), eot_char=CHAR_EOT)
    splits = {split: [k for k, f in enumerate(files) if (f in val_books) == (split == 'val')]
              for split in ('train', 'val')}  # book indices, in manifest order
    for split, members in splits.items():
        _atomic_write(os.path.join(out_dir, f'{split}.bin'), b''.join(ids[k].tobytes() for k in members))
        meta[f'{split}_tokens'] = sum(len(ids[k]) for k in members)
        meta[f'{split}_chars'] = sum(len(texts[k]) for k in members)
    meta['val_choice'] = (f"whole books, in sha256(file name) order, while they fit in {val_fraction} "
                          f"of the manifest's bytes")
    for split, members in splits.items():
        meta[f'{split}_books'] = [files[k] for k in members]
    meta['book_tokens'] = {f: len(ids[k]) for k, f in enumerate(files)}  # each with its EOT
    if tokenizer == 'char':
        meta.update(itos=itos, stoi={c: i for i, c in enumerate(itos)})
    write_meta(out_dir, meta)  # last: its presence marks a finished preparation
    print(f"{out_dir}: {meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens "
          f"({len(files) - len(val_books)} + {len(val_books)} books), {tokenizer} vocab {meta['vocab_size']}")
    return out_dir


def read_text(path, encoding='utf-8', errors='strict'):
    """A text file's contents; a byte the encoding cannot decode stops with where it is and the ways on."""
    with open(path, 'rb') as f:
        data = f.read()
    try:  # decoded whole, so an error's offset is the file's (a text stream decodes in chunks)
        return data.decode(encoding, errors).replace('\r\n', '\n').replace('\r', '\n')  # as text mode reads it
    except LookupError as e:
        raise ValueError(f"{e}: --encoding takes a Python codec (utf-8, latin-1, cp1252, ...), --errors "
                         "'strict' or 'replace'") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not {encoding}: byte {e.object[e.start:e.start + 1]!r} at offset {e.start:,} "
                         f"({e.reason}). Name its encoding (--encoding=latin-1, cp1252, ...) or replace the bytes "
                         f"that do not decode (--errors=replace)") from None


def prepare(dataset='shakespeare', data_dir='data', input='', name='', tokenizer='gpt2', encoding='utf-8',
            errors='strict', **kwargs):
    """Prepare `dataset` (or the text file `input`, called `name`) under data_dir; return its folder.
    Extra keyword arguments go to the FineWeb-Edu preparation (num_proc to gutenberg's too)."""
    if input:
        name = name or os.path.splitext(os.path.basename(input))[0]
        text = read_text(input, encoding, errors)
        return prepare_text(text, os.path.join(data_dir, name), tokenizer, source=os.path.abspath(input))
    if dataset == 'fineweb_edu':
        return prepare_fineweb(os.path.join(data_dir, name or dataset), **kwargs)
    if dataset in ('gutenberg', 'gutenberg_char'):  # --dataset=gutenberg --tokenizer=char is gutenberg_char
        tokenizer = 'char' if dataset == 'gutenberg_char' else tokenizer
        out_dir = os.path.join(data_dir, name or ('gutenberg_char' if tokenizer == 'char' else 'gutenberg'))
        return prepare_gutenberg(out_dir, tokenizer, num_proc=kwargs.get('num_proc') or 0)
    source = os.path.relpath(SHAKESPEARE, REPO)
    if dataset == 'shakespeare':
        return prepare_text(read_shakespeare(), os.path.join(data_dir, name or dataset), 'gpt2', source)
    if dataset == 'shakespeare_char':
        return prepare_text(read_shakespeare(), os.path.join(data_dir, name or dataset), 'char', source)
    raise ValueError(f"unknown dataset {dataset!r}: choose from shakespeare, shakespeare_char, gutenberg, "
                     f"gutenberg_char, fineweb_edu, or give --input=PATH")


def read_meta(dataset_dir):
    """A prepared dataset's meta.json (vocab_size, tokenizer, ...)."""
    with open(os.path.join(dataset_dir, 'meta.json')) as f:
        return json.load(f)


def is_prepared(out_dir):
    """meta.json is written last, and names every file the preparation made."""
    meta_path = os.path.join(out_dir, 'meta.json')
    if not os.path.exists(meta_path):
        return False
    with open(meta_path) as f:
        meta = json.load(f)
    if meta.get('sharded'):
        files = [os.path.join('shards', f) for split in ('train', 'val') for f in meta['shards'][split]]
    else:
        files = ['train.bin', 'val.bin']
    return all(os.path.exists(os.path.join(out_dir, f)) for f in files)


def ensure_prepared(dataset, data_dir='data'):
    """Return data_dir/dataset, preparing it first if it is one of the embedded datasets. For any other
    dataset that is not prepared, exit with the exact command to run."""
    out_dir = os.path.join(data_dir, dataset)
    if is_prepared(out_dir):
        return out_dir
    extra = '' if os.path.normpath(data_dir) == 'data' else f' --data_dir={data_dir}'
    if dataset in EMBEDDED:
        took = 'about ten seconds' if dataset.startswith('gutenberg') else 'a few seconds'
        print(f"{out_dir} is not prepared yet: running `python prepare_data.py --dataset={dataset}{extra}` "
              f"(offline, {took})")
        return prepare(dataset, data_dir=data_dir)
    if dataset == 'fineweb_edu':
        cmd = f"python prepare_data.py --dataset=fineweb_edu --max_tokens=10e9{extra}   # resumes if interrupted"
    else:
        cmd = f"python prepare_data.py --input=PATH/TO/TEXT.txt --name={dataset}{extra}"
    import difflib
    prepared = sorted(d for d in (os.listdir(data_dir) if os.path.isdir(data_dir) else [])
                      if is_prepared(os.path.join(data_dir, d)))
    close = difflib.get_close_matches(dataset, sorted(set(EMBEDDED) | {'fineweb_edu'} | set(prepared)), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise SystemExit(f"error: dataset {dataset!r} is not prepared ({out_dir}/meta.json missing).{hint} Prepared in "
                     f"{data_dir}: {', '.join(prepared) or 'none'}; shipped with the repo (prepared on first use): "
                     f"{', '.join(EMBEDDED)}. "
                     f"To prepare it, run:\n    {cmd}")


# ----------------------------------------------------------------------------------------------------
# FineWeb-Edu (or any large document collection): streamed, tokenised in parallel, written in shards
#
# The token stream is [EOT] doc0 [EOT] doc1 ... (every document preceded by <|endoftext|>), cut at
# max_tokens. Its first val_tokens tokens are the val split, the rest the train split, and each split is
# cut into shards of exactly shard_tokens tokens (the last may be shorter), mid-document where it falls.
# So the shard boundaries depend only on the settings, never on the data.
#
# Resuming: each shard is written to a temporary name and renamed when complete, and only then is
# shards/state.json updated (also atomically) with the shards done and the stream position after them:
# `docs` documents fully written plus the first `offset` tokens of the next one. A restart reads the state,
# skips `docs` documents of the source (reading, not tokenising: much faster), drops `offset` tokens of
# the next document and goes on with the next shard. Anything written after the last state update (a
# .tmp file, or a shard renamed just before the crash) is simply written again, with the same bytes, as
# the source yields the same documents in the same order (datasets streaming without shuffling does)
# and tokenisation is deterministic. The settings are stored in the state too, and a restart with
# other settings is refused rather than mixing two layouts.

def _encode_docs(texts):
    """[EOT] + GPT-2 tokens of each text, as uint16 arrays (runs in the worker processes)."""
    enc = gpt2_encoding()
    return [to_uint16([GPT2_EOT] + enc.encode_ordinary(t)) for t in texts]


def _batched(iterable, n):
    batch = []
    for item in iterable:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def tokenize_stream(open_texts, num_proc, docs_per_batch=256):
    """Yield the token array of each text of open_texts(), in order, tokenising batches of documents in
    `num_proc` processes. At most 2 * num_proc batches are in flight: Pool.imap would read the whole
    stream ahead into memory while the workers fall behind."""
    if num_proc <= 1:
        for batch in _batched(open_texts(), docs_per_batch):
            yield from _encode_docs(batch)
        return
    import collections
    import multiprocessing
    # Fork the workers before the source is opened: `datasets` then starts download threads, and a fork
    # copies only the calling thread, so a lock another thread held would stay locked in the children.
    # (fork rather than spawn: spawn re-imports the main module, which fails for `python - < script`.)
    with multiprocessing.get_context('fork').Pool(num_proc) as pool:
        pending = collections.deque()
        for batch in _batched(open_texts(), docs_per_batch):
            pending.append(pool.apply_async(_encode_docs, (batch,)))
            if len(pending) >= 2 * num_proc:
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()


def open_source(source, source_config='', text_key='text'):
    """Iterate over the texts of `source`: local .jsonl/.json files (a path or glob, optionally .gz), read line
    by line; or local .parquet files, or a Hugging Face hub dataset streamed (e.g. HuggingFaceFW/fineweb-edu,
    config sample-10BT), both through the optional `datasets` package."""
    if source.endswith(('.json', '.jsonl', '.json.gz', '.jsonl.gz')):
        return (json.loads(line)[text_key] for path in sorted(glob.glob(source))
                for line in (gzip.open(path, 'rt', encoding='utf-8') if path.endswith('.gz') else
                             open(path, encoding='utf-8')) if line.strip())
    try:
        import datasets
    except ImportError:
        raise SystemExit(f"error: reading {source} needs the `datasets` package (FineWeb-Edu, parquet): "
                         "pip install datasets") from None
    if source.endswith('.parquet'):
        ds = datasets.load_dataset('parquet', data_files=source, split='train', streaming=True)
    else:
        ds = datasets.load_dataset(source, name=source_config or None, split='train', streaming=True)
    return (row[text_key] for row in ds)


def shard_plan(max_tokens, val_tokens, shard_tokens):
    """[(split, file name, first token, end token)] of every shard, in stream order (up to max_tokens)."""
    plan = []
    for split, lo, hi in (('val', 0, val_tokens), ('train', val_tokens, max_tokens)):
        for i, start in enumerate(range(lo, hi, shard_tokens)):
            plan.append((split, f'{split}_{i:06d}.bin', start, min(start + shard_tokens, hi)))
    return plan


def prepare_fineweb(out_dir, source='HuggingFaceFW/fineweb-edu', source_config='sample-10BT', text_key='text',
                    max_tokens=10e9, val_tokens=1e7, shard_tokens=1e8, num_proc=0, max_shards=0):
    """Stream, tokenise and shard `source` into out_dir/shards (see the comment above); resumable.
    max_shards > 0 stops after writing that many shards in this call (prepare in pieces; tests)."""
    from tqdm import tqdm
    max_tokens, val_tokens, shard_tokens = int(max_tokens), int(val_tokens), int(shard_tokens)
    if not 0 < val_tokens < max_tokens or shard_tokens <= 0:
        raise SystemExit(f"error: need 0 < val_tokens ({val_tokens:,}) < max_tokens ({max_tokens:,}) "
                         f"and shard_tokens > 0")
    settings = dict(source=source, source_config=source_config, text_key=text_key, max_tokens=max_tokens,
                    val_tokens=val_tokens, shard_tokens=shard_tokens)
    shard_dir = os.path.join(out_dir, 'shards')
    state_path = os.path.join(shard_dir, 'state.json')
    os.makedirs(shard_dir, exist_ok=True)
    state = dict(settings=settings, shards=[], docs=0, offset=0, done=False)
    if os.path.exists(state_path):
        with open(state_path) as f:
            state = json.load(f)
        if state['settings'] != settings:
            diff = {k: (state['settings'].get(k), settings[k]) for k in settings if state['settings'].get(k) != settings[k]}
            raise SystemExit(f"error: {shard_dir} was started with other settings (was, now): {diff}. "
                             f"Rerun with the same settings to resume, or delete {shard_dir} to start over.")
    plan = shard_plan(max_tokens, val_tokens, shard_tokens)
    k = len(state['shards'])  # shards completed
    for split, fname, start, end in plan[:k]:  # the state's shards must be there, whole
        path = os.path.join(shard_dir, fname)
        partial_last = state['done'] and fname == state['shards'][-1]  # the source ran out in it
        if not os.path.exists(path) or (os.path.getsize(path) != 2 * (end - start) and not partial_last):
            raise SystemExit(f"error: {path} is missing or has the wrong size; delete {shard_dir} to start over")
    if state['done']:
        print(f"{shard_dir} is complete already")
    elif k:
        print(f"resuming {shard_dir}: {k} of {len(plan)} shards done; skipping {state['docs']:,} documents")
    if os.path.exists(os.path.join(out_dir, 'meta.json')) and not state['done']:
        os.remove(os.path.join(out_dir, 'meta.json'))  # not finished: train.py must not use it yet

    def save_state():
        _atomic_write(state_path, json.dumps(state, indent=1) + '\n')

    def write_shard(fname, parts):
        tmp = os.path.join(shard_dir, fname + '.tmp')
        with open(tmp, 'wb') as f:
            for p in parts:
                f.write(p.tobytes())
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename and the state say so
        os.replace(tmp, os.path.join(shard_dir, fname))

    if not state['done']:
        import itertools
        num_proc = num_proc or os.cpu_count()
        pos = plan[k][2] if k < len(plan) else max_tokens  # stream position, in tokens
        first_doc = state['docs']

        def open_texts():  # the source, less the documents written already
            return itertools.islice(open_source(source, source_config, text_key), first_doc, None)
        doc, skip = state['docs'], state['offset']  # index of the next document; tokens of it already written
        parts, written_now = [], 0
        bar = tqdm(total=max_tokens, initial=pos, unit='tok', unit_scale=True, desc='fineweb_edu', smoothing=0.05)
        stream = tokenize_stream(open_texts, num_proc)
        for ids in stream:
            i = skip  # this document's tokens before i are written
            while i < len(ids) and k < len(plan):
                take = min(len(ids) - i, plan[k][3] - pos)
                parts.append(ids[i:i + take])
                i, pos = i + take, pos + take
                bar.update(take)
                if pos == plan[k][3]:  # shard complete
                    write_shard(plan[k][1], parts)
                    parts, k, written_now = [], k + 1, written_now + 1
                    state['shards'].append(plan[k - 1][1])
                    state['docs'], state['offset'] = (doc, i) if i < len(ids) else (doc + 1, 0)
                    state['done'] = k == len(plan)
                    save_state()
                    if max_shards and written_now >= max_shards and not state['done']:
                        bar.close()
                        stream.close()
                        print(f"stopped after {written_now} shards (max_shards); run again to continue")
                        return out_dir
            doc, skip = doc + 1, 0
            if k == len(plan):
                break
        bar.close()
        stream.close()  # stops the worker processes if we stopped at the budget
        if not state['done']:  # the source ran out before max_tokens: keep the partial last shard
            if pos <= val_tokens:
                raise SystemExit(f"error: the source has only {pos:,} tokens, not enough for "
                                 f"val_tokens={val_tokens:,} plus some training data")
            if parts:
                write_shard(plan[k][1], parts)
                state['shards'].append(plan[k][1])
            state['docs'], state['offset'], state['done'] = doc, 0, True
            save_state()
    shards = {s: [f for f in state['shards'] if f.startswith(s + '_')] for s in ('train', 'val')}
    sizes = {s: sum(os.path.getsize(os.path.join(shard_dir, f)) // 2 for f in shards[s]) for s in shards}
    write_meta(out_dir, dict(tokenizer='gpt2', vocab_size=GPT2_EOT + 1, eot_token=GPT2_EOT, dtype='uint16',
                             sharded=True, shards=shards, train_tokens=sizes['train'], val_tokens=sizes['val'],
                             docs=state['docs'], settings=settings))
    print(f"{out_dir}: {sizes['train']:,} train + {sizes['val']:,} val tokens in "
          f"{len(shards['train'])} + {len(shards['val'])} shards, from {state['docs']:,} documents")
    return out_dir


# ----------------------------------------------------------------------------------------------------
# reading a split back

class TokenSplit:
    """The tokens of one split as one long sequence, whether stored in a single .bin file or in shards.

    Shards are consecutive pieces of one token stream (fineweb_edu cuts it every shard_tokens tokens,
    mid-document), so a window may run across a shard boundary: the result is the same as if all the
    shards were one file. Supports what train.py's nanoGPT-style get_batch needs:
        len(s)                   number of tokens
        s[i:j]                   np.uint16 array of tokens i..j-1 (contiguous slices only)
        s.sample(B, T, gen)      torch.int64 [B, T+1] windows at uniform random starts; x = w[:, :-1],
                                 y = w[:, 1:]; `gen` is an optional torch.Generator, for reproducibility
    Each file is memory-mapped once, on first use. (nanoGPT reopens its memmap every batch against a
    "leak"; that growth is the touched pages of the file counted in RSS: clean page cache the kernel
    reclaims under pressure. Reopening per window costs ~10x the read itself.)
    """

    def __init__(self, paths):
        self.paths = list(paths)
        sizes = [os.path.getsize(p) // 2 for p in self.paths]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).tolist()  # shard k holds [starts[k], starts[k+1])
        self.maps = {}  # shard index -> np.memmap, opened lazily

    def __len__(self):
        return self.starts[-1]

    def __getitem__(self, index):
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("TokenSplit supports contiguous slices only, e.g. s[i:i + block_size]")
        start, stop, _ = index.indices(len(self))
        return self._read(start, max(stop - start, 0))

    def _read(self, start, length):
        out = np.empty(length, dtype=np.uint16)
        k = bisect.bisect_right(self.starts, start) - 1  # the shard holding `start`
        done = 0
        while done < length:
            if k not in self.maps:
                self.maps[k] = np.memmap(self.paths[k], dtype=np.uint16, mode='r')
            lo = start + done - self.starts[k]
            n = min(length - done, self.starts[k + 1] - self.starts[k] - lo)
            out[done:done + n] = self.maps[k][lo:lo + n]
            done += n
            k += 1
        return out

    def sample(self, batch_size, block_size, generator=None):
        import torch
        if len(self) < block_size + 1:
            raise ValueError(f"split has {len(self)} tokens, fewer than block_size + 1 = {block_size + 1}")
        ix = torch.randint(len(self) - block_size, (batch_size,), generator=generator).tolist()
        return torch.from_numpy(np.stack([self._read(i, block_size + 1) for i in ix]).astype(np.int64))


def load_split(dataset_dir, split):
    """The 'train' or 'val' tokens of a prepared dataset folder (e.g. 'data/shakespeare') as a
    TokenSplit: dataset_dir/<split>.bin if present, else the shards that meta.json lists (or, without a
    meta.json, every dataset_dir/shards/<split>_*.bin) in order."""
    single = os.path.join(dataset_dir, f'{split}.bin')
    if os.path.exists(single):
        return TokenSplit([single])
    shard_dir = os.path.join(dataset_dir, 'shards')
    meta_path = os.path.join(dataset_dir, 'meta.json')
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            shards = json.load(f).get('shards', {}).get(split, [])
    else:
        shards = sorted(f for f in os.listdir(shard_dir) if f.startswith(f'{split}_') and f.endswith('.bin')) \
            if os.path.isdir(shard_dir) else []
    if not shards:
        raise FileNotFoundError(f"no {split}.bin or shards/{split}_*.bin in {dataset_dir}: "
                                f"run prepare_data.py for it first")
    return TokenSplit([os.path.join(shard_dir, f) for f in shards])


# ----------------------------------------------------------------------------------------------------

def main():
    from configurator import configure
    config = dict(
        dataset='shakespeare',  # shakespeare | shakespeare_char | gutenberg | gutenberg_char | fineweb_edu
        input='',               # a text file of your own instead of a named dataset
        encoding='utf-8',       # --input's encoding (latin-1, cp1252, ...)
        errors='strict',        # --input's bytes that do not decode: 'strict' stops, 'replace' writes U+FFFD
        name='',                # output folder name under data_dir (default: dataset, or input's stem)
        tokenizer='gpt2',       # for --input and gutenberg: gpt2 | char
        data_dir='data',        # where the prepared datasets go (one folder each)
        # fineweb_edu only
        max_tokens=10e9,        # token budget (train + val)
        val_tokens=1e7,         # the first tokens of the stream form the val split
        shard_tokens=1e8,       # tokens per shard file (200 MB)
        num_proc=os.cpu_count(),  # tokeniser processes (gutenberg too)
        source='HuggingFaceFW/fineweb-edu',  # hub dataset, or local .jsonl/.json/.parquet path or glob
        source_config='sample-10BT',  # the hub dataset's configuration
        text_key='text',        # the field of a record that holds its text
        max_shards=0,           # stop after this many shards in this run (0: no limit); rerun to resume
    )
    configure(config)
    try:
        prepare(**config)
    except (ValueError, OSError) as e:  # unknown dataset or tokenizer, unreadable input: a message is enough
        sys.exit(f"error: {e.strerror + ': ' + e.filename if isinstance(e, OSError) and e.filename else e}")


if __name__ == '__main__':
    main()
