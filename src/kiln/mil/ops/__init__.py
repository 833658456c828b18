"""MIL op implementations, one module per kind. Importing this package registers all of them."""

from . import (  # noqa: F401
    activation,
    classify,
    constexpr,
    control_flow,
    conv,
    elementwise_binary,
    elementwise_unary,
    image_resizing,
    linear,
    normalization,
    pool,
    quantization,
    random,
    recurrent,
    reduction,
    scatter_gather,
    states,
    tensor_operation,
    tensor_transformation,
    transformers,
)
