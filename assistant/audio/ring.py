"""A fixed-size ring of recent samples: the audio just before a wake word or speech onset."""

from __future__ import annotations

import numpy as np


class RingBuffer:
    """Keeps the last `capacity` int16 samples; memory never grows with the input."""

    def __init__(self, capacity: int):
        self.capacity = max(0, capacity)
        self._buf = np.zeros(self.capacity, dtype=np.int16)
        self._end = 0  # total samples ever written

    def write(self, samples: np.ndarray) -> None:
        n = len(samples)
        if self.capacity == 0 or n == 0:
            self._end += n
            return
        if n > self.capacity:  # only the newest `capacity` samples can be kept
            self._end += n - self.capacity
            samples, n = samples[-self.capacity :], self.capacity
        start = self._end % self.capacity
        first = min(n, self.capacity - start)
        self._buf[start : start + first] = samples[:first]
        self._buf[: n - first] = samples[first:]
        self._end += n

    @property
    def written(self) -> int:
        return self._end

    def last(self, n: int) -> np.ndarray:
        """The most recent `n` samples (fewer if fewer were written or kept), oldest first."""
        n = min(n, self.capacity, self._end)
        if n <= 0:
            return np.zeros(0, dtype=np.int16)
        end = self._end % self.capacity
        if n <= end:
            return self._buf[end - n : end].copy()
        return np.concatenate([self._buf[self.capacity - (n - end) :], self._buf[:end]])

    def since(self, sample: int) -> np.ndarray:
        """Samples from absolute position `sample` (clamped to what is kept) to now."""
        return self.last(self._end - sample)
