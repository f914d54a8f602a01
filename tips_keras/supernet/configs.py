"""Configurations of an anytime supernet: which exit is taken and which gates are on.

A configuration is ``(exit index, one bit per gate)``. Bits of gates that lie after the chosen exit
do not change the sub-network; `ConfigSpace.canonical` zeroes them so that equal sub-networks have
equal configurations. Pure Python / numpy: no Keras here.
"""

import dataclasses

import numpy as np


def _is_bit(value):
    """A scalar equal to 0 or 1 (bools, ints, floats, numpy scalars); arrays and others: no."""
    if not isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)):
        return False
    return value == 0 or value == 1


@dataclasses.dataclass(frozen=True)
class Configuration:
    """One sub-network of an anytime supernet.

    Attributes:
        exit: index of the exit head that produces the output (0 = shallowest).
        gates: tuple of 0/1, one per gate in the supernet's gate order.

    Example:
        >>> Configuration(exit=1, gates=(1, 0, 1)).to_vector()
        array([1., 0., 1., 1.], dtype=float32)
    """

    exit: int
    gates: tuple

    def to_vector(self):
        """Returns the control vector ``[gate bits..., exit]`` as float32.

        This is the form the `SubnetController` holds and the samplers and FLOPs tables use.

        Returns:
            A float32 array of shape (G + 1,).

        Example:
            >>> Configuration(exit=0, gates=(1, 0)).to_vector()
            array([1., 0., 0.], dtype=float32)
        """
        return np.asarray(list(self.gates) + [self.exit], dtype=np.float32)

    @classmethod
    def from_vector(cls, vector):
        """Inverse of `to_vector`: gate bits are ``> 0.5``, the exit is rounded.

        Args:
            vector: array-like ``[gate bits..., exit]``.

        Returns:
            A `Configuration` (not canonicalised: see `ConfigSpace.canonical`).

        Example:
            >>> Configuration.from_vector([1.0, 0.0, 2.0])
            Configuration(exit=2, gates=(1, 0))
        """
        vector = np.asarray(vector)
        return cls(exit=int(round(float(vector[-1]))), gates=tuple(int(v > 0.5) for v in vector[:-1]))

    def to_dict(self, gate_names=None):
        """JSON-friendly form (manifests, Pareto fronts, logs).

        Args:
            gate_names: optional names, one per gate; the gates then become ``{name: bit}``.

        Returns:
            ``{"exit": e, "gates": [bits...]}``, or ``{"exit": e, "gates": {name: bit}}``.

        Example:
            >>> Configuration(1, (1, 0)).to_dict(("g0", "g1"))
            {'exit': 1, 'gates': {'g0': 1, 'g1': 0}}
        """
        gates = list(self.gates) if gate_names is None else dict(zip(gate_names, self.gates))
        return {"exit": self.exit, "gates": gates}


@dataclasses.dataclass(frozen=True)
class ConfigSpace:
    """The set of configurations of a supernet.

    Attributes:
        gate_names: names of the gates, in gate-index order.
        gate_min_exit: for each gate, the first exit index for which it matters.
        num_exits: number of exits.

    Example:
        >>> space = ConfigSpace(("g0", "g1"), (0, 1), num_exits=2)
        >>> space.canonical(Configuration(0, (1, 1)))
        Configuration(exit=0, gates=(1, 0))
    """

    gate_names: tuple
    gate_min_exit: tuple
    num_exits: int

    @property
    def num_gates(self):
        """Number of gates ``G``.

        Returns:
            An int.
        """
        return len(self.gate_names)

    def largest(self):
        """All gates on, deepest exit: the full supernet.

        Returns:
            A `Configuration`.

        Example:
            >>> ConfigSpace(("g0", "g1"), (0, 1), num_exits=2).largest()
            Configuration(exit=1, gates=(1, 1))
        """
        return Configuration(self.num_exits - 1, (1,) * self.num_gates)

    def smallest(self):
        """All gates off, shallowest exit: the cheapest sub-network.

        Returns:
            A `Configuration`.

        Example:
            >>> ConfigSpace(("g0", "g1"), (0, 1), num_exits=2).smallest()
            Configuration(exit=0, gates=(0, 0))
        """
        return Configuration(0, (0,) * self.num_gates)

    def relevant(self, exit_index):
        """Boolean mask of the gates that matter when ``exit_index`` is taken.

        Args:
            exit_index: an exit index.

        Returns:
            A boolean array (G,): ``gate_min_exit <= exit_index``.

        Example:
            >>> ConfigSpace(("g0", "g1"), (0, 1), num_exits=2).relevant(0)
            array([ True, False])
        """
        return np.asarray(self.gate_min_exit) <= exit_index

    def canonical(self, config):
        """Zeroes the bits of gates after the exit (they do not change the sub-network).

        Configurations that differ only in such bits are the same sub-network; their canonical forms
        are equal, so searches and caches can de-duplicate them.

        Args:
            config: a `Configuration`.

        Returns:
            The canonical `Configuration`.

        Example:
            >>> space = ConfigSpace(("g0", "g1"), (0, 1), num_exits=2)
            >>> space.canonical(Configuration(0, (1, 1)))
            Configuration(exit=0, gates=(1, 0))
        """
        mask = self.relevant(config.exit)
        return Configuration(config.exit, tuple(int(b and m) for b, m in zip(config.gates, mask)))

    def canonical_vectors(self, vectors):
        """Vectorised `canonical` on control vectors; the bits are also binarised (``> 0.5``).

        Args:
            vectors: array-like (T, G + 1); not modified.

        Returns:
            A float32 copy (T, G + 1) in canonical form.

        Example:
            >>> space = ConfigSpace(("g0", "g1"), (0, 1), num_exits=2)
            >>> space.canonical_vectors([[1, 1, 0]]).tolist()
            [[1.0, 0.0, 0.0]]
        """
        vectors = np.array(vectors, dtype=np.float32, copy=True)
        exits = np.rint(vectors[:, -1]).astype(int)
        keep = np.asarray(self.gate_min_exit)[None, :] <= exits[:, None]
        vectors[:, :-1] = np.where(keep, (vectors[:, :-1] > 0.5).astype(np.float32), 0.0)
        return vectors

    def all_vectors(self, limit=1 << 16):
        """Every distinct (canonical) configuration as control vectors.

        Only for small spaces (search larger ones with `tips_keras.search`).

        Args:
            limit: the most configurations to enumerate (default 65,536).

        Returns:
            A float32 array (N, G + 1), grouped by exit (shallowest first).

        Raises:
            ValueError: the space has more than ``limit`` configurations.

        Example:
            >>> ConfigSpace(("g0", "g1"), (0, 1), num_exits=2).all_vectors().shape
            (6, 3)
        """
        min_exit = np.asarray(self.gate_min_exit)
        counts = [1 << int((min_exit <= e).sum()) for e in range(self.num_exits)]
        if sum(counts) > limit:
            raise ValueError(
                f"The configuration space has {sum(counts)} configurations, more than "
                f"limit={limit}. Use tips_keras.search for large spaces."
            )
        rows = []
        for exit_index, count in enumerate(counts):
            relevant = np.flatnonzero(min_exit <= exit_index)
            codes = np.arange(count)[:, None]
            bits = np.zeros((count, self.num_gates), dtype=np.float32)
            bits[:, relevant] = (codes >> np.arange(len(relevant))[None, :]) & 1
            rows.append(np.concatenate([bits, np.full((count, 1), exit_index, np.float32)], axis=1))
        return np.concatenate(rows, axis=0)

    def resolve(self, config):
        """Turns any accepted form of a configuration into a validated `Configuration`.

        Every public function taking a ``config`` goes through it. The result is not canonicalised.

        Args:
            config: a `Configuration`; ``(exit, bits)``; ``{"exit": e, "gates": bits}`` where
                ``bits`` is a sequence of 0/1 of length G or a dict ``{gate name: 0/1}`` (gates
                not named are off); or the strings ``"largest"`` / ``"smallest"``.

        Returns:
            A `Configuration`.

        Raises:
            ValueError: wrong number of bits, unknown gate names, exit out of range, bits not 0/1.

        Example:
            >>> space = ConfigSpace(("g0", "g1"), (0, 1), num_exits=2)
            >>> space.resolve({"exit": 1, "gates": {"g1": 1}})
            Configuration(exit=1, gates=(0, 1))
        """
        if isinstance(config, str):
            if config == "largest":
                return self.largest()
            if config == "smallest":
                return self.smallest()
            raise ValueError(
                "Invalid value for argument `config`. Expected a Configuration, (exit, bits), "
                f"a dict or one of 'largest', 'smallest'. Received: config={config!r}"
            )
        if isinstance(config, Configuration):
            exit_index, bits = config.exit, config.gates
        elif isinstance(config, dict):
            if set(config) - {"exit", "gates"} or "exit" not in config:
                raise ValueError(
                    "Invalid value for argument `config`. Expected a dict with keys 'exit' and "
                    f"'gates'. Received: config={config!r}"
                )
            exit_index, bits = config["exit"], config.get("gates", ())
        elif isinstance(config, (tuple, list)) and len(config) == 2:
            exit_index, bits = config
        else:
            raise ValueError(
                "Invalid value for argument `config`. Expected a Configuration, (exit, bits) or "
                f"{{'exit': e, 'gates': bits}}. Received: config={config!r}"
            )
        if isinstance(bits, dict):
            unknown = sorted(set(bits) - set(self.gate_names), key=repr)  # keys of any type
            if unknown:
                raise ValueError(
                    f"Invalid value for argument `config`: unknown gate names {unknown}. "
                    f"Accepted gate names: {list(self.gate_names)}. Received: config={config!r}"
                )
            bits = [bits.get(name, 0) for name in self.gate_names]
        try:
            bits = list(bits)
        except TypeError:  # None, a number, ...: not a sequence of bits
            raise ValueError(
                f"Invalid value for argument `config`. Expected {self.num_gates} gate bits "
                f"(a sequence or a dict of gate names). Received: config={config!r}"
            ) from None
        if len(bits) != self.num_gates:
            raise ValueError(
                f"Invalid value for argument `config`. Expected {self.num_gates} gate bits "
                f"(one per gate: {list(self.gate_names)}). Received: {len(bits)} bits, "
                f"config={config!r}"
            )
        if not all(_is_bit(b) for b in bits):
            raise ValueError(
                "Invalid value for argument `config`. Expected gate bits in {0, 1}. "
                f"Received: config={config!r}"
            )
        if isinstance(exit_index, bool) or not isinstance(exit_index, (int, np.integer)) or not (
            0 <= exit_index < self.num_exits
        ):
            raise ValueError(
                f"Invalid value for argument `config`. Expected an exit index in "
                f"[0, {self.num_exits - 1}]. Received: exit={exit_index!r}"
            )
        return Configuration(int(exit_index), tuple(int(b) for b in bits))
