"""
Prepare FineWeb-Edu (the paper's data), or any large collection of documents, for train.py: streamed,
tokenised with GPT-2's BPE in parallel, and written in shards that prepare_data.load_split reads as one
sequence. Resumable: run the same command again after a stop.

    python prepare_fineweb.py --max_tokens=10e9                 # HuggingFaceFW/fineweb-edu, sample-10BT (needs datasets)
    python prepare_fineweb.py --source='my/*.jsonl.gz' --name=mine   # local .jsonl/.json (.gz) or .parquet files

Writes data/<name>/shards/{train,val}_NNNNNN.bin, shards/state.json (the resume point) and, last,
data/<name>/meta.json.
"""
import glob
import gzip
import json
import os
import sys

from prepare_data import GPT2_EOT, atomic_write, gpt2_encoding, to_uint16, unfinish, write_meta

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
    if not state['done']:
        unfinish(out_dir)

    def save_state():
        atomic_write(state_path, json.dumps(state, indent=1) + '\n')

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


def main():
    from configurator import configure
    config = dict(
        name='fineweb_edu',     # the output folder under data_dir
        data_dir='data',        # where the prepared datasets go
        max_tokens=10e9,        # token budget (train + val)
        val_tokens=1e7,         # the first tokens of the stream form the val split
        shard_tokens=1e8,       # tokens per shard file (200 MB)
        num_proc=os.cpu_count(),  # tokeniser processes
        source='HuggingFaceFW/fineweb-edu',  # hub dataset, or local .jsonl/.json/.parquet path or glob
        source_config='sample-10BT',  # the hub dataset's configuration
        text_key='text',        # the field of a record that holds its text
        max_shards=0,           # stop after this many shards in this run (0: no limit); rerun to resume
    )
    configure(config)
    name, data_dir = config.pop('name'), config.pop('data_dir')
    try:
        prepare_fineweb(os.path.join(data_dir, name), **config)
    except (ValueError, OSError) as e:
        sys.exit(f"error: {e}")


if __name__ == '__main__':
    main()
