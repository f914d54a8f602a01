"""`FeatureCache`: feature maps of a supernet kept between evaluations, within a byte budget."""

import collections

import numpy as np

MISSING = object()  # returned by `FeatureCache.get` for a key it does not hold


def nbytes(value):
    """Bytes of a cached value: ``None`` or a tuple of streams (lists of tensors, or ``None``).

    Args:
        value: ``None`` or a tuple of lists of tensors (each list may be ``None``).

    Returns:
        An int (bytes).
    """
    if value is None:
        return 0
    return sum(int(np.prod(t.shape)) * t.dtype.size for stream in value if stream for t in stream)


class FeatureCache:
    """Feature maps by key, at most ``budget`` bytes; the deepest keys are dropped first.

    A key is a tuple whose length grows with the number of gates upstream of the map (see
    `tips_keras.search.shared_prefix`). Past the budget, the entries with the longest keys go
    first, the least recently used among them: they are the cheapest to recompute from the
    shallower maps, which more configurations share. A value held under several keys (a skipped
    block passes its input on unchanged) is counted once.

    Args:
        budget: the most bytes kept (0 keeps nothing).

    Attributes:
        hits / misses: `get` calls that found / `put` calls that added an entry.
        bytes: bytes held now.

    Example:
        >>> cache = FeatureCache(1 << 20)
        >>> cache.put(("a",), None); cache.get(("a",)) is None
        True
    """

    def __init__(self, budget):
        self.budget = budget
        self.hits = self.misses = 0
        self.bytes = 0
        self._entries = collections.OrderedDict()  # key -> value, least recently used first
        self._refs = {}  # id(value) -> [keys holding it, bytes]

    def __len__(self):
        return len(self._entries)

    def get(self, key):
        """The value under ``key`` (now the most recently used), or `MISSING`.

        Args:
            key: a tuple.

        Returns:
            The value put under ``key``, or `MISSING`.
        """
        if key not in self._entries:
            return MISSING
        self._entries.move_to_end(key)
        self.hits += 1
        return self._entries[key]

    def put(self, key, value):
        """Keeps ``value`` under ``key``, then drops entries until within the budget.

        Args:
            key: a tuple (longer = more gates upstream = dropped earlier).
            value: ``None`` (a dropped map) or a tuple of streams (see `nbytes`).
        """
        if self.budget <= 0:
            return
        self._entries[key] = value
        self.misses += 1
        if value is not None:
            ref = self._refs.setdefault(id(value), [0, nbytes(value)])
            ref[0] += 1
            if ref[0] == 1:
                self.bytes += ref[1]
        while self.bytes > self.budget and self._entries:
            depth = max(len(k) for k in self._entries)
            self._drop(next(k for k in self._entries if len(k) == depth))

    def _drop(self, key):
        value = self._entries.pop(key)
        if value is not None:
            ref = self._refs[id(value)]
            ref[0] -= 1
            if ref[0] == 0:
                self.bytes -= ref[1]
                del self._refs[id(value)]

    def clear(self):
        """Drops every entry (the counters stay)."""
        self._entries.clear()
        self._refs.clear()
        self.bytes = 0
