"""
The Gutenberg corpus: 121 public-domain books shipped in data/gutenberg/books.tar.xz (provenance:
data/gutenberg/README.md), checked against its manifest, cleaned of illustration captions and split into whole books.

    python prepare_data.py --dataset=gutenberg         # GPT-2 BPE (~15.7M tokens); train.py prepares it on first use
    python prepare_data.py --dataset=gutenberg_char    # the same books, one token per character
"""
import hashlib
import io
import lzma
import os
import re
import tarfile

import numpy as np

from prepare_data import GPT2_EOT, REPO, atomic_write, gpt2_encoding, to_uint16, unfinish, write_meta

GUTENBERG = os.path.join(REPO, 'data', 'gutenberg')  # books.tar.xz + manifest.tsv
GUTENBERG_VAL_FRACTION = 0.05  # of the corpus's bytes, in whole books

# Each split holds whole books, in manifest order, each preceded by an end-of-text marker: [EOT] book0 [EOT] book1 ...,
# as in fineweb_edu. GPT-2 has <|endoftext|> for it; a char vocabulary has no special tokens, so there the marker is
# CHAR_EOT, a control character no book contains, made part of the alphabet (meta.json: eot_token, eot_char). Validation
# is a fixed set of whole books, not the tail of one (the model would have trained on that book's first part), chosen
# from the manifest's byte counts so that the BPE and the char datasets hold out the same books.

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
    """[EOT] + GPT-2 tokens of each text, in order, in num_proc processes, longest text first (so that no worker is left
    with a long book at the end); the progress bar counts characters, for its ETA, and shows the tokens so far."""
    import contextlib
    import multiprocessing
    from tqdm import tqdm
    gpt2_encoding()  # built once, before the fork: the workers inherit it
    jobs = [(i, texts[i]) for i in sorted(range(len(texts)), key=lambda i: -len(texts[i]))]
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
    unfinish(out_dir)
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
        atomic_write(os.path.join(out_dir, f'{split}.bin'), b''.join(ids[k].tobytes() for k in members))
        meta[f'{split}_tokens'] = sum(len(ids[k]) for k in members)
        meta[f'{split}_chars'] = sum(len(texts[k]) for k in members)
    meta['val_choice'] = (f"whole books, in sha256(file name) order, while they fit in {val_fraction} "
                          f"of the manifest's bytes")
    meta.update({f'{split}_books': [files[k] for k in members] for split, members in splits.items()})
    meta['book_tokens'] = {f: len(ids[k]) for k, f in enumerate(files)}  # each with its EOT
    if tokenizer == 'char':
        meta.update(itos=itos, stoi={c: i for i, c in enumerate(itos)})
    write_meta(out_dir, meta)
    print(f"{out_dir}: {meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens "
          f"({len(files) - len(val_books)} + {len(val_books)} books), {tokenizer} vocab {meta['vocab_size']}")
    return out_dir
