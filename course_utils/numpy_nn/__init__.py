"""Neural-network layers in plain NumPy, NCHW layout, PyTorch weight layout.

Every layer is a pair ``forward(x, ...) -> (out, cache)`` and
``backward(dout, cache) -> gradients``, the convention of CS231n's ``layers.py``.
Each module names the notebook that introduces it:

* ``conv`` and ``fast_conv``: convolution (chapter 01);
* ``pooling``: max, average, global and concatenated pooling (chapter 02);
* ``activations``, ``losses``, ``normalization``, ``dropout`` (chapter 03);
* ``linear`` and ``optim``: the last pieces of a whole CNN trained in NumPy (chapter 04).
"""
# chapter 01
from course_utils.numpy_nn.conv import (  # noqa: F401
    conv2d_backward,
    conv2d_backward_naive,
    conv2d_forward,
    conv2d_forward_naive,
    conv_output_size,
)
from course_utils.numpy_nn.fast_conv import Conv2dWorkspace, conv2d_backward_fast, conv2d_forward_fast  # noqa: F401

# chapter 02
from course_utils.numpy_nn.pooling import (  # noqa: F401
    avg_pool2d_backward,
    avg_pool2d_forward,
    concat_pool_backward,
    concat_pool_forward,
    global_avg_pool_backward,
    global_avg_pool_forward,
    max_pool2d_backward,
    max_pool2d_forward,
    max_pool2d_forward_naive,
    pool_output_size,
)

# chapter 03
from course_utils.numpy_nn.activations import (  # noqa: F401
    elu_backward,
    elu_forward,
    gelu_backward,
    gelu_forward,
    leaky_relu_backward,
    leaky_relu_forward,
    relu_backward,
    relu_forward,
    sigmoid_backward,
    sigmoid_forward,
    tanh_backward,
    tanh_forward,
)
from course_utils.numpy_nn.dropout import dropout_backward, dropout_forward  # noqa: F401
from course_utils.numpy_nn.losses import cross_entropy_backward, cross_entropy_forward, log_softmax, softmax  # noqa: F401
from course_utils.numpy_nn.normalization import (  # noqa: F401
    batchnorm2d_backward,
    batchnorm2d_forward,
    batchnorm2d_state,
    groupnorm_forward,
    layernorm_forward,
)

# chapter 04
from course_utils.numpy_nn.linear import flatten_backward, flatten_forward, linear_backward, linear_forward  # noqa: F401
from course_utils.numpy_nn.optim import sgd_momentum_init, sgd_momentum_step  # noqa: F401
