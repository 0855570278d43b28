"""training.py, the one definition of the batches, the schedule and the step: the batches never repeat a
token within a pass and do not depend on the DDP layout; the schedule's shape. (A sweep row and a train.py
run with the same settings give the same loss: tests/test_study_run.py.)"""
import pytest
import torch

import training


def test_schedule():
    lr = [training.lr_at(it, 1.0, 10, 100, 0.1) for it in range(120)]
    assert lr[0] == pytest.approx(1 / 11) and lr[9] == pytest.approx(10 / 11)  # linear warmup
    assert lr[10] == pytest.approx(1.0) and max(lr) == pytest.approx(1.0)
    assert lr[55] == pytest.approx(0.1 + 0.45)  # the cosine's midpoint
    assert lr[100] == pytest.approx(0.1) and lr[119] == 0.1  # then min_lr
    assert all(a >= b for a, b in zip(lr[10:], lr[11:]))
    assert training.lr_at(50, 0.3, 10, 100, 0.0, decay=False) == 0.3


def tokens(n):
    return {'train': torch.arange(n), 'val': torch.arange(n // 4)}


def test_no_token_twice_within_a_pass():
    data = tokens(20_000)
    b = training.Batches(data, batch_size=4, block_size=32, seed=7)
    n = b.n_windows('train')
    starts = torch.cat([b.window_starts('train', it, 0) for it in range(n // 4)])
    assert len(starts.unique()) == len(starts) == n - n % 4  # disjoint windows, each once
    x, y = b.get('train', 3)
    assert x.shape == (4, 32) and torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal(y[:, -1], x[:, -1] + 1)  # windows of consecutive tokens (here: token i == i)
    # the next pass reads the split again, cut at another offset and in another order
    later = torch.cat([b.window_starts('train', it, 0) for it in range(n // 4, 2 * (n // 4))])
    offset = int(later[0] % 32)
    assert offset != 0 and (later % 32 == offset).all()  # one seeded offset for the whole pass
    assert not torch.equal((later - offset) // 32, starts // 32)  # and another order of the windows
    assert (later + 33 <= 20_000).all()


def test_the_smallest_split_gives_a_window():
    """A split of 2 × block_size tokens has room for one window after any offset; one token less is refused."""
    b = training.Batches({'train': torch.arange(64), 'val': torch.arange(64)}, 1, 32, seed=0)
    for it in range(40):  # passes 1.. cut at random offsets
        x, y = b.get('train', it)
        assert x.shape == (1, 32) and int(y[0, -1]) < 64
    with pytest.raises(ValueError, match='--block_size=31'):
        training.Batches({'train': torch.arange(63), 'val': torch.arange(64)}, 1, 32, seed=0)


def test_batches_do_not_depend_on_the_layout():
    """Iteration it's global batch is the same for 1 process x 4 micro-batches and 2 ranks x 2."""
    data = tokens(50_000)
    one = training.Batches(data, 2, 16, seed=1, accum=4)
    ranks = [training.Batches(data, 2, 16, seed=1, accum=2, world=2, rank=r) for r in (0, 1)]
    for it in (0, 5):
        a = torch.cat([one.get('train', it, m)[0] for m in range(4)])
        b = torch.cat([ranks[r].get('train', it, m)[0] for r in (0, 1) for m in (0, 1)])
        assert torch.equal(a, b)
    # eval batches are fixed and not the training ones
    assert torch.equal(one.get('val', -1)[0], training.Batches(data, 2, 16, seed=1).get('val', -1)[0])
    assert not torch.equal(one.get('val', -1)[0], one.get('val', -2)[0])
