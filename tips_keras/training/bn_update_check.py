"""Which BatchNorm layers a recalibration really updates (the check behind its ``RuntimeWarning``).

A BatchNorm layer that something calls with a fixed ``training=False`` (a custom layer, a nested
model called inside one) never updates its moving statistics in the recalibration passes, and
would silently keep the supernet's shared statistics in every configuration. `UpdateCheck` finds
such layers the first time a configuration that runs them is recalibrated: before the passes each
unchecked layer's moving mean is set to a mark that the first pass overwrites (its momentum is 0);
a mark still there afterwards means the layer never ran in training mode. Each layer is checked
once; later recalibrations cost nothing here. Used by `tips_keras.training.batchnorm.Recalibrator`.
"""

import warnings

import keras
import numpy as np

_MARK = 1234.5  # moving mean set before a layer's first recalibration: still there = never updated


def moments(layers):
    """The moving mean and variance of each layer, as numpy arrays.

    Args:
        layers: BatchNormalization layers.

    Returns:
        A list of ``(moving_mean, moving_variance)`` numpy arrays, one per layer.

    Example:
        >>> moments(batchnorm_layers(model))  # doctest: +SKIP
    """
    return [(keras.ops.convert_to_numpy(bn.moving_mean), keras.ops.convert_to_numpy(bn.moving_variance))
            for bn in layers]


class UpdateCheck:
    """Remembers which BatchNorm layers of a supernet were seen to update (or warned about).

    Args:
        model: the gated supernet (`AnytimeModel`).
        layers: its BatchNormalization layers being recalibrated.
        find: ``layer -> its BatchNormalization layers`` (e.g.
            `tips_keras.training.batchnorm.batchnorm_layers`), to map the layers the active
            configuration runs to their BatchNorm layers.

    Example:
        >>> check = UpdateCheck(model, layers, batchnorm_layers)  # doctest: +SKIP
        >>> unchecked = check.unchecked_active()  # doctest: +SKIP
        >>> before = UpdateCheck.mark(unchecked)  # doctest: +SKIP
        >>> ...  # the recalibration passes  # doctest: +SKIP
        >>> check.check(unchecked, before)  # doctest: +SKIP
    """

    def __init__(self, model, layers, find):
        self.model = model
        self._layers = list(layers)
        self._find = find
        self._checked = set()  # ids of BatchNorm layers seen to update (or warned about)
        self._by_layer = None  # top-level layer name -> its BatchNorm layers
        self._active_cache = {}  # active control vector (bytes) -> its BatchNorm layers

    def unchecked(self, layers):
        """The layers of ``layers`` not checked yet.

        Args:
            layers: BatchNormalization layers.

        Returns:
            A list, in the order given.
        """
        return [bn for bn in layers if id(bn) not in self._checked]

    def unchecked_active(self):
        """BatchNorm layers inside the layers the active configuration runs, not checked yet.

        Returns:
            A list of BatchNormalization layers (empty once every layer was checked).
        """
        if len(self._checked) == len(self._layers):
            return []  # every layer was seen to update, or was warned about
        if self._by_layer is None:
            ours = {id(bn) for bn in self._layers}
            self._by_layer = {layer.name: [bn for bn in self._find(layer) if id(bn) in ours]
                              for layer in self.model.layers}
        active = keras.ops.convert_to_numpy(self.model.controller.active)
        key = active.tobytes()
        if key not in self._active_cache:
            topo = self.model.topology
            mask = topo.edge_masks(active[None])[0]
            names = {topo.edge_layer[e] for e in np.flatnonzero(mask)}
            self._active_cache[key] = list(
                {id(bn): bn for name in names for bn in self._by_layer.get(name, [])}.values())
        return self.unchecked(self._active_cache[key])

    @staticmethod
    def mark(layers):
        """Sets a mark the first pass overwrites (its momentum is 0).

        Args:
            layers: the BatchNormalization layers about to be recalibrated.

        Returns:
            Their moments before the mark (`moments`), for `check`.
        """
        before = moments(layers)
        for bn in layers:
            bn.moving_mean.assign(np.full(bn.moving_mean.shape, _MARK, str(bn.moving_mean.dtype)))
        return before

    def check(self, layers, before):
        """Warns (once per layer) about layers the passes ran but did not update (mark still set).

        A layer left with the mark gets its moving mean back from ``before``.

        Args:
            layers: the layers given to `mark`.
            before: what `mark` returned.

        Warns:
            RuntimeWarning: naming the layers that did not update.
        """
        stuck = []
        for bn, (mean, _) in zip(layers, before):
            self._checked.add(id(bn))
            if np.all(keras.ops.convert_to_numpy(bn.moving_mean) == _MARK):
                bn.moving_mean.assign(mean)  # put its statistics back
                stuck.append(bn.path if hasattr(bn, "path") else bn.name)
        if stuck:
            warnings.warn(
                f"BatchNorm recalibration left the statistics of {len(stuck)} layer(s) of the active "
                f"configuration unchanged: {stuck}. They never ran in training mode during the "
                "recalibration passes (something calls them with a fixed `training=False`, e.g. "
                "a custom layer, or a nested model called inside one), so they keep the "
                "supernet's shared statistics for every configuration. Call them without a fixed "
                "`training` argument (tips_keras.anytime inlines nested functional models, whose "
                "`training` Keras overrides anyway).", RuntimeWarning, stacklevel=3)
