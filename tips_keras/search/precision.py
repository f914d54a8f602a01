"""Reduced-precision evaluation: convolutions in bfloat16 while a search ranks configurations.

A search spends nearly all its time in the convolutions of each configuration's own blocks and
exit head. On a CPU whose oneDNN kernels run bfloat16 natively (AVX512-BF16, as on AMD Zen 4 and
Intel Cooper Lake, or AMX on Sapphire Rapids), a bfloat16 convolution does the same
multiply-accumulates in about half the time (``benchmarks/speed_benchmark.py --sections 3``
measures one convolution and the search in both dtypes). The rule is Keras' own mixed precision (``keras.mixed_precision``, policy ``"mixed_bfloat16"``):
variables stay float32 and are cast to bfloat16 when a layer reads them, and a
``BatchNormalization`` layer computes its batch statistics and normalisation in float32 whatever
its input. Here only the weighted layers (convolutions, dense) compute in bfloat16, so every
feature map that leaves a layer call, every BatchNorm statistic and every class score stays
float32.

The policies are swapped only while a layer call is *traced* into a compiled function and put
back at once: the user's model is never left changed. On a CPU without native bfloat16 the
kernels emulate it and are slower than float32; keep the default there.
"""

import contextlib

import keras

COMPUTE_DTYPES = ("float32", "bfloat16")

# The layers whose kernels do the multiply-accumulates: computed in bfloat16.
_WEIGHTED = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.DepthwiseConv2D,
             keras.layers.SeparableConv2D, keras.layers.Dense)


def check_compute_dtype(compute_dtype):
    """Returns ``compute_dtype`` as one of `COMPUTE_DTYPES`.

    Args:
        compute_dtype: ``"float32"`` or ``"bfloat16"``.

    Returns:
        The same string.

    Raises:
        ValueError: any other value.

    Example:
        >>> check_compute_dtype("bfloat16")
        'bfloat16'
    """
    if not isinstance(compute_dtype, str) or compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"Invalid value for argument `compute_dtype`. Expected one of {COMPUTE_DTYPES}. "
                         f"Received: compute_dtype={compute_dtype!r}")
    return compute_dtype


@contextlib.contextmanager
def compute_in(layer, compute_dtype):
    """Runs the weighted layers inside ``layer`` (itself included) in ``compute_dtype``.

    For ``"bfloat16"`` each convolution and dense layer float32 takes Keras' ``"mixed_bfloat16"``
    policy for the duration of the ``with`` block and gets its own policy back afterwards (also
    on an error); other layers, BatchNormalization included, keep theirs. A layer whose
    variables are not float32 (a user's float16 or quantized layer) is left as it is.
    ``"float32"`` changes nothing. Call the layer inside the block, while tracing a compiled
    function: the trace keeps the casts, the layer keeps its policy.

    Args:
        layer: a Keras layer (a block, an exit head, a single convolution).
        compute_dtype: one of `COMPUTE_DTYPES`.

    Yields:
        None.

    Raises:
        ValueError: an unknown ``compute_dtype``.

    Example:
        >>> conv = keras.layers.Conv2D(4, 3)
        >>> with compute_in(conv, "bfloat16"):
        ...     keras.backend.standardize_dtype(conv(keras.ops.ones((1, 8, 8, 2))).dtype)
        'bfloat16'
        >>> conv.dtype_policy.name
        'float32'
    """
    check_compute_dtype(compute_dtype)
    if compute_dtype == "float32":
        yield
        return
    chosen = [sub for sub in layer._flatten_layers(include_self=True)
              if isinstance(sub, _WEIGHTED) and sub.dtype_policy.name == "float32"]
    saved = [sub.dtype_policy for sub in chosen]
    try:
        for sub in chosen:
            sub.dtype_policy = "mixed_bfloat16"
        yield
    finally:
        for sub, policy in zip(chosen, saved):
            sub.dtype_policy = policy
