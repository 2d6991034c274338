import numpy as np

from bsmfusion.data.sampling import BucketBatchSampler, ResumableDataLoader, sorted_batches


def test_bucketed_batches_cover_every_row_once_deterministically():
    lengths = np.random.default_rng(0).integers(5, 500, 1000)
    sampler = BucketBatchSampler(lengths, batch_size=32, seed=3, window_batches=10)
    first = list(sampler)
    assert sorted(i for b in first for i in b) == list(range(1000))
    assert len(first) == len(sampler) == 32
    again = BucketBatchSampler(lengths, batch_size=32, seed=3, window_batches=10)
    assert list(again) == first
    assert list(sampler) != first  # the next pass is the next epoch: a new order


def test_bucketing_reduces_padding_against_random_batches():
    lengths = np.random.default_rng(1).integers(5, 500, 2000)

    def padded(batches):
        return sum(len(b) * lengths[b].max() for b in batches)

    bucketed = padded(list(BucketBatchSampler(lengths, 32, seed=0)))
    order = np.random.default_rng(0).permutation(2000)
    random = padded([order[i:i + 32] for i in range(0, 2000, 32)])
    assert bucketed < 0.7 * random
    scoring = sorted_batches(lengths, 32)
    assert padded(scoring) < bucketed and sorted(i for b in scoring for i in b) == list(range(2000))


def test_loader_state_resumes_mid_epoch_and_rolls_over_at_epoch_end():
    lengths = np.arange(100)
    sampler = BucketBatchSampler(lengths, 10, seed=0)
    loader = ResumableDataLoader(list(range(100)), batch_sampler=sampler, collate_fn=lambda x: x)
    epoch0 = list(sampler.global_batches(0))
    iterator = iter(loader)
    seen = [next(iterator) for _ in range(4)]
    state = loader.state_dict()
    assert state == {"epoch": 0, "consumed": 4}
    fresh_sampler = BucketBatchSampler(lengths, 10, seed=0)
    fresh = ResumableDataLoader(list(range(100)), batch_sampler=fresh_sampler, collate_fn=lambda x: x)
    fresh.load_state_dict(state)
    assert seen + list(fresh) == epoch0
    fresh.load_state_dict({"epoch": 0, "consumed": 10})
    assert list(fresh) == fresh_sampler.global_batches(1)


def _as_list(items):
    return list(items)


def test_loader_state_counts_handed_out_batches_when_workers_prefetch():
    """Two workers prefetch 2 batches each: the state must still say 4 batches were consumed, and resume after them."""
    lengths = np.arange(100)
    sampler = BucketBatchSampler(lengths, 10, seed=0)
    loader = ResumableDataLoader(list(range(100)), batch_sampler=sampler, collate_fn=_as_list, num_workers=2,
                                 prefetch_factor=2, persistent_workers=True)
    iterator = iter(loader)
    seen = [next(iterator) for _ in range(4)]
    assert sampler.yielded > 4  # the sampler ran ahead for the workers
    state = loader.state_dict()
    assert state == {"epoch": 0, "consumed": 4}
    fresh_sampler = BucketBatchSampler(lengths, 10, seed=0)
    fresh = ResumableDataLoader(list(range(100)), batch_sampler=fresh_sampler, collate_fn=_as_list, num_workers=2)
    fresh.load_state_dict(state)
    assert seen + list(fresh) == sampler.global_batches(0)
    del iterator
    assert list(loader) == sampler.global_batches(1)  # persistent workers, next pass: next epoch
