"""Length-bucketed batching: batches of similar thread lengths waste less compute on padding.

Training batches are deterministic for (seed, epoch), split across distributed ranks, and resumable in the
middle of an epoch (the loader's state says how many batches were consumed). Scoring batches are sorted by
length; every batch carries row positions so outputs are restored to input order.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class BucketBatchSampler(Sampler[list[int]]):
    """Shuffle rows, sort them by length inside windows of `window_batches` batches, shuffle the batch order.

    With several ranks each rank takes every world-th batch of the same global order (the count is trimmed to a
    multiple of the world size so ranks step together). Each pass (`iter`) uses the next epoch's order; Lightning
    does not call `set_epoch` on a batch sampler, so the sampler counts epochs itself.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, window_batches: int = 50,
                 shuffle: bool = True):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.window = window_batches * batch_size
        self.shuffle = shuffle
        self.epoch = 0
        self.next_epoch = 0
        self.skip = 0
        self.yielded = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order the next pass uses."""
        self.next_epoch = epoch

    def global_batches(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        batches: list[list[int]] = []
        for start in range(0, len(order), self.window):
            window = order[start:start + self.window]
            window = window[np.argsort(-self.lengths[window], kind="stable")]
            batches += [window[i:i + self.batch_size].tolist() for i in range(0, len(window), self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def rank_batches(self) -> list[list[int]]:
        rank, world = _world()
        batches = self.global_batches(self.epoch)
        if world > 1:
            batches = batches[: len(batches) - len(batches) % world][rank::world]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        self.epoch, self.next_epoch = self.next_epoch, self.next_epoch + 1
        batches = self.rank_batches()
        skip, self.skip = self.skip, 0
        self.yielded = skip
        for batch in batches[skip:]:
            self.yielded += 1
            yield batch

    def __len__(self) -> int:
        _, world = _world()
        total = -(-len(self.lengths) // self.batch_size) if len(self.lengths) else 0
        return total // world if world > 1 else total


class ResumableDataLoader(DataLoader):
    """A DataLoader over a `BucketBatchSampler` whose state Lightning saves in checkpoints.

    Lightning asks for the state after a step has finished and before it fetches the next batch, so every
    yielded batch has been trained on (the resume test pins this). The state counts the batches this loader has
    handed out, not the sampler's position: with worker processes the sampler runs ahead by the prefetched batches.
    """

    _consumed = 0

    def __iter__(self) -> Iterator[Any]:
        self._consumed = self.batch_sampler.skip  # read before the pass starts: the sampler resets it
        for batch in super().__iter__():
            self._consumed += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        sampler: BucketBatchSampler = self.batch_sampler
        return {"epoch": sampler.epoch, "consumed": self._consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sampler: BucketBatchSampler = self.batch_sampler
        if state["consumed"] >= len(sampler):
            sampler.set_epoch(state["epoch"] + 1)
            sampler.skip = 0
        else:
            sampler.set_epoch(state["epoch"])
            sampler.skip = state["consumed"]


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[list[int]]:
    """Scoring order: longest first, so each batch pads little; positions restore input order afterwards."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
