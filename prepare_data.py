"""
Tokenise a dataset into uint16 token files for train.py.

    python prepare_data.py                             # shakespeare: GPT-2 BPE of the corpus shipped in data/
    python prepare_data.py --dataset=shakespeare_char  # the same text, one token per character
    python prepare_data.py --dataset=gutenberg         # 121 public-domain books shipped in data/ (~15.7M tokens)
    python prepare_data.py --dataset=gutenberg_char    # the same books, one token per character
    python prepare_data.py --input=my.txt [--name=mine] [--tokenizer=char]   # your own text file

Writes data/<name>/train.bin and val.bin (uint16 token ids, read back with np.memmap as in nanoGPT) and
data/<name>/meta.json (tokenizer, vocab_size, token counts; for char-level data the itos/stoi tables).
meta.json is written last, so its presence means the preparation finished. FineWeb-Edu, the paper's data,
is streamed and written in shards by prepare_fineweb.py; load_split reads either layout.
"""
import bisect
import contextlib
import functools
import glob
import gzip
import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.abspath(__file__))
SHAKESPEARE = os.path.join(REPO, 'data', 'shakespeare', 'shakespeare.txt.gz')
GPT2_FILES = os.path.join(REPO, 'data', 'gpt2')
EMBEDDED = ('shakespeare', 'shakespeare_char', 'gutenberg', 'gutenberg_char')  # need nothing but the repository
VAL_FRACTION = 0.1

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
    """tiktoken's 'gpt2' Encoding, built from data/gpt2/ (identical to the downloaded one, but offline). In GPT-2's
    tables a token's id is also its merge rank, so encoder.json alone gives tiktoken's mergeable ranks; vocab.bpe (the
    merge list) is used to check that, which is what tiktoken's own loader asserts too."""
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
    meta = read_meta(os.path.join(data_dir, name))
    if meta['tokenizer'] == 'gpt2':
        return gpt2_encoding()
    tok = CharTokenizer(meta['itos'])
    tok.eot_token = meta.get('eot_token')  # gutenberg_char separates its books with a character of its own
    return tok


# ----------------------------------------------------------------------------------------------------
# text files -> train.bin, val.bin, meta.json

def split_point(text, fraction=1 - VAL_FRACTION):
    """Where to cut `text` into train and val: the line start nearest to fraction * len(text) whose previous line ends
    in a visible character and which itself starts with one. GPT-2's pre-tokenizer makes such a lone '\\n' its own
    piece, so the two halves tokenise exactly as the whole text does (train + val token counts equal the whole text's).
    Falls back to the exact fraction if the text has no such line boundary."""
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


@contextlib.contextmanager
def replacing(path):
    """A temporary name to write `path` under, renamed to it once the block ends without error and the bytes are
    on disk: a reader, a kill or a power cut never finds half a file (and an error leaves the old one)."""
    tmp = f'{path}.tmp'
    try:
        yield tmp
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write(path, data):
    """Write bytes or str whole (replacing)."""
    with replacing(path) as tmp, open(tmp, 'wb') as f:
        f.write(data.encode('utf-8') if isinstance(data, str) else data)


def to_uint16(ids):
    ids = np.asarray(ids)
    assert ids.size == 0 or (ids.min() >= 0 and ids.max() < 2**16), "token ids must fit in uint16"
    return ids.astype(np.uint16)


def write_meta(out_dir, meta):
    """Last of a preparation: meta.json's presence marks the folder finished."""
    atomic_write(os.path.join(out_dir, 'meta.json'), json.dumps(meta, indent=1) + '\n')


def unfinish(out_dir):
    """First of a preparation that rewrites a folder: until the new meta.json, nothing may train on it."""
    os.makedirs(out_dir, exist_ok=True)
    if os.path.exists(os.path.join(out_dir, 'meta.json')):
        os.remove(os.path.join(out_dir, 'meta.json'))


MIN_TRAIN_BLOCK = 1024  # train.py's default block_size: a split needs 2 × block_size tokens (training.Batches)


def check_split_sizes(source, tokens):
    """Stop before writing a dataset that nothing can train on, and say what train.py's block_size allows."""
    small = min(tokens.values())
    sizes = f"{tokens['train']:,} train and {tokens['val']:,} val tokens"
    if small < 2 * 32:  # block_size 32, the smallest context worth training
        raise ValueError(f"{source} gives {sizes}; each split needs at least 2 × block_size tokens "
                         f"({2 * MIN_TRAIN_BLOCK:,} for train.py's default block_size): give a longer text")
    if small < 2 * MIN_TRAIN_BLOCK:
        print(f"note: {source} gives {sizes}: train with --block_size={small // 2} or less")


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
    unfinish(out_dir)
    for split, part in (('train', text[:cut]), ('val', text[cut:])):
        atomic_write(os.path.join(out_dir, f'{split}.bin'), to_uint16(ids[split]).tobytes())
        meta[f'{split}_tokens'] = len(ids[split])
        meta[f'{split}_chars'] = len(part)
    write_meta(out_dir, meta)
    print(f"{out_dir}: {meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens, "
          f"{tokenizer} vocab {meta['vocab_size']}")
    return out_dir


def read_shakespeare():
    with gzip.open(SHAKESPEARE, 'rt', encoding='utf-8') as f:
        return f.read()


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
            errors='strict', num_proc=0):
    """Prepare `dataset` (or the text file `input`, called `name`) under data_dir; return its folder.
    num_proc goes to gutenberg's tokeniser processes."""
    if input:
        name = name or os.path.splitext(os.path.basename(input))[0]
        text = read_text(input, encoding, errors)
        return prepare_text(text, os.path.join(data_dir, name), tokenizer, source=os.path.abspath(input))
    if dataset == 'fineweb_edu':
        raise ValueError("FineWeb-Edu streams from the hub: python prepare_fineweb.py --max_tokens=10e9")
    if dataset in ('gutenberg', 'gutenberg_char'):  # --dataset=gutenberg --tokenizer=char is gutenberg_char
        tokenizer = 'char' if dataset == 'gutenberg_char' else tokenizer
        out_dir = os.path.join(data_dir, name or ('gutenberg_char' if tokenizer == 'char' else 'gutenberg'))
        from prepare_gutenberg import prepare_gutenberg  # its own file: the corpus's checks and split
        return prepare_gutenberg(out_dir, tokenizer, num_proc=num_proc or 0)
    if dataset in ('shakespeare', 'shakespeare_char'):
        return prepare_text(read_shakespeare(), os.path.join(data_dir, name or dataset),
                            'char' if dataset == 'shakespeare_char' else 'gpt2', os.path.relpath(SHAKESPEARE, REPO))
    raise ValueError(f"unknown dataset {dataset!r}: choose from shakespeare, shakespeare_char, gutenberg, "
                     f"gutenberg_char, fineweb_edu, or give --input=PATH")


def read_meta(dataset_dir):
    """A prepared dataset's meta.json (vocab_size, tokenizer, ...)."""
    with open(os.path.join(dataset_dir, 'meta.json')) as f:
        return json.load(f)


def is_prepared(out_dir):
    """meta.json is written last, and names every file the preparation made."""
    if not os.path.exists(os.path.join(out_dir, 'meta.json')):
        return False
    meta = read_meta(out_dir)
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
        cmd = f"python prepare_fineweb.py --max_tokens=10e9{extra}   # resumes if interrupted"
    else:
        cmd = f"python prepare_data.py --input=PATH/TO/TEXT.txt --name={dataset}{extra}"
    import difflib
    prepared = sorted(d for d in (os.listdir(data_dir) if os.path.isdir(data_dir) else [])
                      if is_prepared(os.path.join(data_dir, d)))
    close = difflib.get_close_matches(dataset, sorted(set(EMBEDDED) | {'fineweb_edu'} | set(prepared)), n=1)
    hint = f" Did you mean {close[0]!r}?" if close and close[0] != dataset else ""
    why = ("a file its meta.json names is missing" if os.path.exists(os.path.join(out_dir, 'meta.json'))
           else f"{out_dir}/meta.json missing")
    raise SystemExit(f"error: dataset {dataset!r} is not prepared ({why}).{hint} Prepared in "
                     f"{data_dir}: {', '.join(prepared) or 'none'}; shipped with the repo (prepared on first use): "
                     f"{', '.join(EMBEDDED)}. To prepare it, run:\n    {cmd}")


# ----------------------------------------------------------------------------------------------------
# reading a split back

class TokenSplit:
    """The tokens of one split as one long sequence, whether stored in a single .bin file or in shards. Shards are
    consecutive pieces of one token stream (fineweb_edu cuts it every shard_tokens tokens, mid-document), so a window
    may run across a shard boundary: the result is the same as if all the shards were one file. Supports what
    training.Batches needs: len(s), the number of tokens, and s[i:j], an np.uint16 array of tokens i..j-1 (contiguous
    slices only). Each file is memory-mapped once, on first use. (nanoGPT reopens its memmap every batch against a
    "leak"; that growth is the touched pages of the file counted in RSS: clean page cache the kernel reclaims under
    pressure. Reopening per window costs ~10x the read itself.)"""

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
        length = max(stop - start, 0)
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


def load_split(dataset_dir, split):
    """The 'train' or 'val' tokens of a prepared dataset folder (e.g. 'data/shakespeare') as a
    TokenSplit: dataset_dir/<split>.bin if present, else the shards that meta.json lists (or, without a
    meta.json, every dataset_dir/shards/<split>_*.bin) in order."""
    single, shard_dir = os.path.join(dataset_dir, f'{split}.bin'), os.path.join(dataset_dir, 'shards')
    meta = read_meta(dataset_dir) if os.path.exists(os.path.join(dataset_dir, 'meta.json')) else {}
    if os.path.exists(single):
        paths = [single]
    elif meta:
        paths = [os.path.join(shard_dir, f) for f in meta.get('shards', {}).get(split, [])]
    else:
        paths = sorted(glob.glob(os.path.join(shard_dir, f'{split}_*.bin')))
    if not paths:
        raise FileNotFoundError(f"no {split}.bin or shards/{split}_*.bin in {dataset_dir}: "
                                f"run prepare_data.py for it first")
    tokens = TokenSplit(paths)
    want, size = meta.get(f'{split}_tokens'), sum(os.path.getsize(p) for p in paths)
    if want is not None and size != 2 * want:  # a file cut short, or one from another preparation
        raise ValueError(f"{dataset_dir}: the {split} split has {size:,} bytes and meta.json says {want:,} tokens "
                         f"({2 * want:,} bytes): prepare it again (remove its meta.json, then prepare_data.py)")
    return tokens


# ----------------------------------------------------------------------------------------------------

def main():
    from configurator import configure
    config = dict(
        dataset='shakespeare',  # shakespeare | shakespeare_char | gutenberg | gutenberg_char (fineweb_edu: prepare_fineweb.py)
        input='',               # a text file of your own instead of a named dataset
        encoding='utf-8',       # --input's encoding (latin-1, cp1252, ...)
        errors='strict',        # --input's bytes that do not decode: 'strict' stops, 'replace' writes U+FFFD
        name='',                # output folder name under data_dir (default: dataset, or input's stem)
        tokenizer='gpt2',       # for --input and gutenberg: gpt2 | char
        data_dir='data',        # where the prepared datasets go (one folder each)
        num_proc=os.cpu_count(),  # gutenberg's tokeniser processes
    )
    configure(config)
    try:
        prepare(**config)
    except (ValueError, OSError) as e:  # unknown dataset or tokenizer, unreadable input: a message is enough
        sys.exit(f"error: {e.strerror + ': ' + e.filename if isinstance(e, OSError) and e.filename else e}")


if __name__ == '__main__':
    main()
