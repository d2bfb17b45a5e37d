"""Checks for the exercises of ``solutions/12_vision_transformer.ipynb``: the parts of a ViT, against torchvision.

The learner writes

* ``patch_embedding(images, weight, bias, class_token, pos_embedding)``: the tokens that enter a ViT's encoder,
  (N, C, H, W) -> (N, 1 + S, D) with S = (H / P) * (W / P): every P x P patch projected by ``weight`` (D, C, P, P,
  a ``Conv2d``'s layout) and ``bias`` (D,), patches in row-major order, the class token (1, 1, D) in front, the
  position embedding (1, 1 + S, D) added (Dosovitskiy et al. 2021, equation 1). With a strided convolution or with
  ``F.unfold``; the reference is ``torchvision.models.VisionTransformer`` itself, the tokens taken where they enter
  its encoder blocks;
* ``scaled_dot_product_attention(q, k, v)``: softmax(q k^T / sqrt(d)) v over the last two axes (Vaswani et al.
  2017, equation 1), against ``torch.nn.functional.scaled_dot_product_attention``;
* ``MultiHeadAttention(hidden_dim, num_heads)``: self-attention, (N, S, D) -> (N, S, D), with one packed
  ``nn.Linear(D, 3 * D)`` for the queries, keys and values (in that order, the layout of ``nn.MultiheadAttention``'s
  ``in_proj_weight``) and one ``nn.Linear(D, D)`` after the heads are merged, against
  ``nn.MultiheadAttention(D, num_heads, batch_first=True)``;
* ``EncoderBlock(num_heads, hidden_dim, mlp_dim)``: x + attention(LN(x)), then x + MLP(LN(x)), the MLP
  Linear-GELU-Linear, layer norms with eps 1e-6, against ``torchvision.models.vision_transformer.EncoderBlock``.

The two module checks call ``course_utils.checks.architectures.check_same_architecture``: parameters paired through
the operations that use them, every operation compared by value with the reference's (redrawn) weights copied in.
``nn.MultiheadAttention`` is one traced operation there, which the learner may write out in steps. The two function
checks compare values on fixed random cases and, when the output is wrong, name the likely mistake by comparing it
with the mistakes people make (computed here with torch): a class token at the end, no position embedding, an
``unfold`` followed by ``.view``, a softmax over the wrong axis, a missing scale.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.vision_transformer import EncoderBlock as TorchvisionEncoderBlock
from torchvision.models.vision_transformer import VisionTransformer

from course_utils.checks import common
from course_utils.checks.architectures import check_same_architecture

RTOL = 1e-4  # float32 sums of up to 768 products: relative to each value
ATOL = 1e-4  # ... and absolute, for values of order one

# (N, C, H, W, P, D) of the patch-embedding cases: small, D != C*P*P, and ViT-B/16's 224x224 with 16x16 patches
PATCH_CASES = ((2, 3, 32, 32, 8, 16), (2, 3, 24, 24, 4, 20), (1, 3, 224, 224, 16, 768))


def _generator(seed):
    return torch.Generator().manual_seed(seed)


def _as_tensor(received, case, what):
    if not isinstance(received, torch.Tensor):
        raise AssertionError(f"{case}: {what} should be a torch.Tensor; got {common.type_name(received)}")
    return received.detach().float()


def _diagnose(received, expected, mistakes, case, what):
    """Raise an ``AssertionError`` naming the mistake whose result ``received`` equals, else the first difference."""
    if tuple(received.shape) == tuple(expected.shape) and torch.allclose(received, expected, rtol=RTOL, atol=ATOL):
        return
    if tuple(received.shape) == tuple(expected.shape):
        for mistake, wrong in mistakes:
            if torch.allclose(received, wrong, rtol=RTOL, atol=ATOL):
                raise AssertionError(f"{case}: {what} differ from the reference's and equal those of {mistake}")
    common.assert_close(received, expected, case, what=what, rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------- patch embedding

def reference_tokens(images, weight, bias, class_token, pos_embedding):
    """The tokens entering the encoder blocks of ``torchvision.models.VisionTransformer`` with these parameters.

    Args:
        images: (N, 3, H, H); weight: (D, 3, P, P); bias: (D,); class_token: (1, 1, D); pos_embedding: (1, 1 + S, D)
        with S = (H / P)^2.

    Returns:
        (N, 1 + S, D), taken by a forward pre-hook on ``encoder.layers`` (after the position embedding is added).
    """
    N, C, H, W = images.shape
    D, _, P, _ = weight.shape
    vit = VisionTransformer(image_size=H, patch_size=P, num_layers=1, num_heads=1, hidden_dim=D, mlp_dim=4,
                            num_classes=2)
    with torch.no_grad():
        vit.conv_proj.weight.copy_(weight)
        vit.conv_proj.bias.copy_(bias)
        vit.class_token.copy_(class_token)
        vit.encoder.pos_embedding.copy_(pos_embedding)
    captured = {}
    hook = vit.encoder.layers.register_forward_pre_hook(lambda module, inputs: captured.update(tokens=inputs[0]))
    try:
        with torch.no_grad():
            vit.eval()(images)
    finally:
        hook.remove()
    return captured["tokens"]


def _patch_mistakes(images, weight, bias, class_token, pos_embedding):
    """``(what it is, tokens)`` for the usual wrong patch embeddings, computed with torch."""
    N, C, H, W = images.shape
    D, _, P, _ = weight.shape
    S = (H // P) * (W // P)
    columns = F.unfold(images, kernel_size=P, stride=P)  # (N, C*P*P, S)
    project = lambda patches: patches @ weight.reshape(D, -1).T + bias  # noqa: E731  (N, S, C*P*P) -> (N, S, D)
    patches = project(columns.transpose(1, 2))  # (N, S, D), the right patches
    scrambled = project(columns.view(N, S, C * P * P))  # a view reads (C*P*P, S) memory as (S, C*P*P)
    by_columns = project(columns.view(N, C * P * P, H // P, W // P).transpose(2, 3).reshape(N, C * P * P, S)
                         .transpose(1, 2))  # patches in column-major order
    cls = class_token.expand(N, -1, -1)  # (N, 1, D)
    return [
        ("a class token placed after the patches (index S instead of 0)",
         torch.cat([patches, cls], 1) + pos_embedding),
        ("tokens without the position embedding added", torch.cat([cls, patches], 1)),
        ("`F.unfold(...)` followed by `.view(N, S, C*P*P)`, which scrambles values across patches (use "
         "`.transpose(1, 2)`)", torch.cat([cls, scrambled], 1) + pos_embedding),
        ("patches taken column by column (the order is row by row, as `flatten(2)` of the (N, D, H/P, W/P) map "
         "gives)", torch.cat([cls, by_columns], 1) + pos_embedding),
        ("a projection without its bias", torch.cat([cls, patches - bias], 1) + pos_embedding),
    ]


def check_patch_embedding(patch_embedding):
    """``patch_embedding(images, weight, bias, class_token, pos_embedding)`` against torchvision's ViT, 3 cases.

    Cases (N, C, H, W, P, D): (2, 3, 32, 32, 8, 16), (2, 3, 24, 24, 4, 20) (D differs from C*P*P) and
    (1, 3, 224, 224, 16, 768), ViT-B/16's: 196 patches of 768 values. Every parameter has random values of order
    one, so that no term can be missing unseen.
    """
    for index, (N, C, H, W, P, D) in enumerate(PATCH_CASES):
        case = f"images ({N}, {C}, {H}, {W}), {P}x{P} patches, D={D}"
        generator = _generator(index)
        S = (H // P) * (W // P)
        images = torch.randn(N, C, H, W, generator=generator)
        weight = torch.randn(D, C, P, P, generator=generator) / math.sqrt(C * P * P)
        bias = torch.randn(D, generator=generator)
        class_token = torch.randn(1, 1, D, generator=generator)
        pos_embedding = torch.randn(1, 1 + S, D, generator=generator)
        arguments = (images, weight, bias, class_token, pos_embedding)
        expected = reference_tokens(*arguments)  # (N, 1 + S, D)
        with torch.no_grad():
            received = common.call(patch_embedding, *(a.clone() for a in arguments), case=case)
        received = _as_tensor(received, case, "the tokens")
        common.assert_shape(received, (N, 1 + S, D), case, what="the tokens (N, 1 + S, D)")
        _diagnose(received, expected, _patch_mistakes(*arguments), case, "the tokens")
    common.passed("patch_embedding", len(PATCH_CASES))


# --------------------------------------------------------------------------- scaled dot-product attention

# shapes of (q, k, v): queries and keys of different lengths and values of another width show a wrong axis;
# a multi-head batch (N, heads, S, d) shows that only the last two axes are attended over
ATTENTION_CASES = (((2, 5, 8), (2, 7, 8), (2, 7, 3)), ((2, 4, 6, 16), (2, 4, 6, 16), (2, 4, 6, 16)),
                   ((3, 1, 32), (3, 9, 32), (3, 9, 4)))


def _attention_mistakes(q, k, v):
    d = q.shape[-1]
    scores = q @ k.transpose(-2, -1)  # (..., S_q, S_k)
    return [
        ("a softmax over the queries (dim=-2) instead of the keys (dim=-1)",
         (scores / math.sqrt(d)).softmax(dim=-2) @ v),
        ("no 1/sqrt(d) scale", scores.softmax(dim=-1) @ v),
        ("a 1/d scale instead of 1/sqrt(d)", (scores / d).softmax(dim=-1) @ v),
        ("a sqrt(d) scale (multiplied instead of divided)", (scores * math.sqrt(d)).softmax(dim=-1) @ v),
    ]


def check_scaled_dot_product_attention(scaled_dot_product_attention):
    """``scaled_dot_product_attention(q, k, v)`` against ``F.scaled_dot_product_attention`` on 3 cases.

    q (..., S_q, d), k (..., S_k, d), v (..., S_k, d_v) -> (..., S_q, d_v); the cases have S_q != S_k, d_v != d and
    a four-dimensional multi-head batch. Queries and keys have std 2, so that the attention is far from uniform and
    a wrong scale shows.
    """
    for index, shapes in enumerate(ATTENTION_CASES):
        case = f"q {shapes[0]}, k {shapes[1]}, v {shapes[2]}"
        generator = _generator(10 + index)
        q, k, v = (torch.randn(*shape, generator=generator) for shape in shapes)
        q, k = 2 * q, 2 * k
        expected = F.scaled_dot_product_attention(q, k, v)  # (..., S_q, d_v)
        with torch.no_grad():
            received = common.call(scaled_dot_product_attention, q.clone(), k.clone(), v.clone(), case=case)
        received = _as_tensor(received, case, "the output")
        common.assert_shape(received, expected.shape, case, what="the output (..., S_q, d_v)")
        _diagnose(received, expected, _attention_mistakes(q, k, v), case, "the output")
    common.passed("scaled_dot_product_attention", len(ATTENTION_CASES))


# --------------------------------------------------------------------------- multi-head attention

class ReferenceSelfAttention(nn.Module):
    """``nn.MultiheadAttention`` as a ViT calls it: self-attention on (N, S, D), the output without the weights."""

    def __init__(self, hidden_dim, num_heads):
        super().__init__()
        self.self_attention = nn.MultiheadAttention(hidden_dim, num_heads, batch_first=True)

    def forward(self, x):  # x: (N, S, D)
        output, _ = self.self_attention(x, x, x, need_weights=False)
        return output  # (N, S, D)


def _build(builder, *args, case, what):
    """Call the learner's class (or function); it must return an ``nn.Module``."""
    model = common.call(builder, *args, case=case)
    if not common.is_module(model):
        raise AssertionError(f"{case}: {what} should return an nn.Module; got {common.type_name(model)}")
    return model


# (hidden_dim, num_heads, S): head sizes 4, 4 and 2; a single head; 8 heads of an odd-length sequence
ATTENTION_MODULE_CASES = ((16, 4, 5), (12, 1, 6), (16, 8, 7))


def check_multi_head_attention(MultiHeadAttention):
    """``MultiHeadAttention(hidden_dim, num_heads)`` against ``nn.MultiheadAttention(..., batch_first=True)``.

    Cases (D, heads, S): (16, 4, 5), (12, 1, 6) and (16, 8, 7), on a batch of 2; compared by
    ``check_same_architecture`` (parameters, every operation, the output) with the reference's weights copied in.
    """
    for hidden_dim, num_heads, length in ATTENTION_MODULE_CASES:
        case = f"MultiHeadAttention(hidden_dim={hidden_dim}, num_heads={num_heads}) on (2, {length}, {hidden_dim})"
        model = _build(MultiHeadAttention, hidden_dim, num_heads, case=case, what="MultiHeadAttention")
        reference = ReferenceSelfAttention(hidden_dim, num_heads)
        check_same_architecture(model, reference, (2, length, hidden_dim), name=case)
    common.passed("MultiHeadAttention", len(ATTENTION_MODULE_CASES))


# --------------------------------------------------------------------------- the encoder block

# (num_heads, hidden_dim, mlp_dim, S)
ENCODER_CASES = ((4, 16, 32, 5), (2, 12, 40, 7))


def check_encoder_block(EncoderBlock):
    """``EncoderBlock(num_heads, hidden_dim, mlp_dim)`` against torchvision's ``EncoderBlock`` (no dropout).

    Cases (heads, D, MLP width, S): (4, 16, 32, 5) and (2, 12, 40, 7), on a batch of 2; compared by
    ``check_same_architecture``: the pre-norm order, both residual additions, the GELU and the layer norms' eps
    (1e-6, not ``nn.LayerNorm``'s default 1e-5) all show.
    """
    for num_heads, hidden_dim, mlp_dim, length in ENCODER_CASES:
        case = (f"EncoderBlock(num_heads={num_heads}, hidden_dim={hidden_dim}, mlp_dim={mlp_dim}) "
                f"on (2, {length}, {hidden_dim})")
        model = _build(EncoderBlock, num_heads, hidden_dim, mlp_dim, case=case, what="EncoderBlock")
        reference = TorchvisionEncoderBlock(num_heads, hidden_dim, mlp_dim, dropout=0.0, attention_dropout=0.0)
        check_same_architecture(model, reference, (2, length, hidden_dim), name=case)
    common.passed("EncoderBlock", len(ENCODER_CASES))
