"""Neural-network layers in plain NumPy, NCHW layout, PyTorch weight layout.

Every layer is a pair ``forward(x, ...) -> (out, cache)`` and
``backward(dout, cache) -> gradients``, the convention of CS231n's ``layers.py``.
Each module names the notebook that introduces it.
"""
from course_utils.numpy_nn.conv import (  # noqa: F401  (chapter 01)
    conv2d_backward,
    conv2d_backward_naive,
    conv2d_forward,
    conv2d_forward_naive,
    conv_output_size,
)
