"""The chapter 12 checks pass on correct ViT parts written in several ways and fail on the usual mistakes.

The correct parts are written out here in plain PyTorch (from the ViT paper and torchvision's layout),
independently of the checks' references; each wrong part changes one thing.
"""
import math


import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_utils.checks import vision_transformer as checks
from split_mode import assert_same_failure, split_verdict


def stub(*args, **kwargs):
    raise NotImplementedError("exercise: replace this line with your code")


# --------------------------------------------------------------------------- patch embedding

def embed_by_conv(images, weight, bias, class_token, pos_embedding):
    N = images.shape[0]
    patches = F.conv2d(images, weight, bias, stride=weight.shape[-1])  # (N, D, H/P, W/P)
    patches = patches.flatten(2).transpose(1, 2)  # (N, S, D)
    return torch.cat([class_token.expand(N, -1, -1), patches], dim=1) + pos_embedding  # (N, 1 + S, D)


def embed_by_unfold(images, weight, bias, class_token, pos_embedding, view=False, cls_last=False, pos=True):
    N = images.shape[0]
    D, C, P, _ = weight.shape
    columns = F.unfold(images, kernel_size=P, stride=P)  # (N, C*P*P, S)
    S = columns.shape[-1]
    patches = columns.view(N, S, C * P * P) if view else columns.transpose(1, 2)  # (N, S, C*P*P)
    patches = patches @ weight.reshape(D, -1).T + bias  # (N, S, D)
    cls = class_token.expand(N, -1, -1)  # (N, 1, D)
    tokens = torch.cat([patches, cls] if cls_last else [cls, patches], dim=1)  # (N, 1 + S, D)
    return tokens + pos_embedding if pos else tokens


def embed_by_loops(images, weight, bias, class_token, pos_embedding):
    N, C, H, W = images.shape
    D, _, P, _ = weight.shape
    tokens = [class_token.expand(N, -1, -1)[:, 0]]
    for row in range(0, H, P):
        for col in range(0, W, P):
            patch = images[:, :, row:row + P, col:col + P].reshape(N, -1)  # (N, C*P*P)
            tokens.append(patch @ weight.reshape(D, -1).T + bias)  # (N, D)
    return torch.stack(tokens, dim=1) + pos_embedding  # (N, 1 + S, D)


@pytest.mark.parametrize("embedding", [embed_by_conv, embed_by_unfold, embed_by_loops],
                         ids=["conv", "unfold", "loops"])
def test_patch_embedding_check_passes_on_correct_embeddings(embedding, capsys):
    checks.check_patch_embedding(embedding)
    assert "patch_embedding: all 3 cases passed" in capsys.readouterr().out


def test_patch_embedding_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match="not implemented yet"):
        checks.check_patch_embedding(stub)


def test_patch_embedding_check_fails_on_a_view_after_unfold():
    with pytest.raises(AssertionError, match=r"images \(2, 3, 32, 32\).*`F.unfold\(...\)` followed by `.view"):
        checks.check_patch_embedding(lambda *a: embed_by_unfold(*a, view=True))


def test_patch_embedding_check_fails_on_the_class_token_at_the_end():
    with pytest.raises(AssertionError, match=r"class token placed after the patches"):
        checks.check_patch_embedding(lambda *a: embed_by_unfold(*a, cls_last=True))


def test_patch_embedding_check_fails_without_the_position_embedding():
    with pytest.raises(AssertionError, match=r"tokens without the position embedding added"):
        checks.check_patch_embedding(lambda *a: embed_by_unfold(*a, pos=False))


def test_patch_embedding_check_fails_on_patches_in_column_order():
    def column_order(images, weight, bias, class_token, pos_embedding):
        return embed_by_conv(images.transpose(2, 3), weight.transpose(2, 3), bias, class_token, pos_embedding)

    with pytest.raises(AssertionError, match=r"patches taken column by column"):
        checks.check_patch_embedding(column_order)


def test_patch_embedding_check_fails_without_the_class_token():
    def no_class_token(images, weight, bias, class_token, pos_embedding):
        return embed_by_conv(images, weight, bias, class_token, pos_embedding)[:, 1:]

    with pytest.raises(AssertionError, match=r"the tokens \(N, 1 \+ S, D\) has shape \(2, 16, 16\), expected "
                                             r"\(2, 17, 16\)"):
        checks.check_patch_embedding(no_class_token)


# --------------------------------------------------------------------------- scaled dot-product attention

def attention_by_hand(q, k, v, softmax_dim=-1, scale=True):
    scores = q @ k.transpose(-2, -1)  # (..., S_q, S_k)
    if scale:
        scores = scores / math.sqrt(q.shape[-1])
    return scores.softmax(dim=softmax_dim) @ v  # (..., S_q, d_v)


def attention_by_einsum(q, k, v):
    scores = torch.einsum("...qd,...kd->...qk", q, k) * q.shape[-1] ** -0.5  # (..., S_q, S_k)
    return torch.einsum("...qk,...kv->...qv", torch.softmax(scores, dim=-1), v)  # (..., S_q, d_v)


@pytest.mark.parametrize("attention", [attention_by_hand, attention_by_einsum, F.scaled_dot_product_attention],
                         ids=["by hand", "einsum", "torch"])
def test_attention_check_passes_on_correct_attention(attention, capsys):
    checks.check_scaled_dot_product_attention(attention)
    assert "scaled_dot_product_attention: all 3 cases passed" in capsys.readouterr().out


def test_attention_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match="not implemented yet"):
        checks.check_scaled_dot_product_attention(stub)


def test_attention_check_fails_on_a_softmax_over_the_wrong_axis():
    with pytest.raises(AssertionError, match=r"q \(2, 5, 8\), k \(2, 7, 8\).*softmax over the queries \(dim=-2\)"):
        checks.check_scaled_dot_product_attention(lambda q, k, v: attention_by_hand(q, k, v, softmax_dim=-2))


def test_attention_check_fails_without_the_scale():
    with pytest.raises(AssertionError, match=r"no 1/sqrt\(d\) scale"):
        checks.check_scaled_dot_product_attention(lambda q, k, v: attention_by_hand(q, k, v, scale=False))


def test_attention_check_fails_on_keys_not_transposed():
    with pytest.raises(AssertionError, match=r"q \(2, 5, 8\), k \(2, 7, 8\), v \(2, 7, 3\): <lambda> raised "
                                             r"RuntimeError"):
        checks.check_scaled_dot_product_attention(lambda q, k, v: (q @ k).softmax(-1) @ v)


# --------------------------------------------------------------------------- multi-head attention

class MultiHeadAttention(nn.Module):
    """Packed q, k, v projection, heads split as (N, S, heads, d) -> (N, heads, S, d), then merged back."""

    def __init__(self, hidden_dim, num_heads, split="right", attention=attention_by_hand):
        super().__init__()
        self.num_heads = num_heads
        self.in_proj = nn.Linear(hidden_dim, 3 * hidden_dim)
        self.out_proj = nn.Linear(hidden_dim, hidden_dim)
        self.split, self.attention = split, attention

    def forward(self, x):
        N, S, D = x.shape
        heads = self.num_heads
        q, k, v = self.in_proj(x).chunk(3, dim=-1)  # 3 x (N, S, D)
        if self.split == "right":
            q, k, v = (t.reshape(N, S, heads, D // heads).transpose(1, 2) for t in (q, k, v))  # (N, heads, S, d)
        else:  # the memory of (N, S, D) read as (N, heads, S, d): tokens and heads mixed up
            q, k, v = (t.reshape(N, heads, S, D // heads) for t in (q, k, v))
        out = self.attention(q, k, v)  # (N, heads, S, d)
        out = out.transpose(1, 2).reshape(N, S, D)  # (N, S, D)
        return self.out_proj(out)


class TorchMultiHeadAttention(nn.Module):
    def __init__(self, hidden_dim, num_heads):
        super().__init__()
        self.attention = nn.MultiheadAttention(hidden_dim, num_heads, batch_first=True)

    def forward(self, x):
        return self.attention(x, x, x, need_weights=False)[0]


@pytest.mark.parametrize("build", [
    MultiHeadAttention,
    lambda d, h: MultiHeadAttention(d, h, attention=F.scaled_dot_product_attention),
    TorchMultiHeadAttention,
], ids=["by hand", "F.scaled_dot_product_attention", "nn.MultiheadAttention"])
def test_multi_head_attention_check_passes_on_correct_modules(build, capsys):
    checks.check_multi_head_attention(build)
    assert "MultiHeadAttention: all 3 cases passed" in capsys.readouterr().out


def test_multi_head_attention_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match="not implemented yet"):
        checks.check_multi_head_attention(stub)


def test_multi_head_attention_check_fails_on_heads_split_wrongly():
    with pytest.raises(AssertionError, match=r"(?s)num_heads=4.*multi_head_attention_forward.*heads split"):
        checks.check_multi_head_attention(lambda d, h: MultiHeadAttention(d, h, split="wrong"))


def test_multi_head_attention_check_fails_without_the_scale():
    with pytest.raises(AssertionError, match=r"(?s)num_heads=4.*multi_head_attention_forward.*missing 1/sqrt"):
        checks.check_multi_head_attention(
            lambda d, h: MultiHeadAttention(d, h, attention=lambda q, k, v: attention_by_hand(q, k, v, scale=False)))


def test_multi_head_attention_check_fails_on_a_softmax_over_the_wrong_axis():
    with pytest.raises(AssertionError, match=r"(?s)num_heads=4.*multi_head_attention_forward.*softmax over the wrong"):
        checks.check_multi_head_attention(
            lambda d, h: MultiHeadAttention(d, h, attention=lambda q, k, v: attention_by_hand(q, k, v, -2)))


def test_multi_head_attention_check_fails_without_the_output_projection():
    class NoOutputProjection(MultiHeadAttention):
        def __init__(self, hidden_dim, num_heads):
            super().__init__(hidden_dim, num_heads)
            self.out_proj = nn.Identity()

    with pytest.raises(AssertionError, match=r"num_heads=4.*out_proj.weight of shape \(16, 16\) has no counterpart"):
        checks.check_multi_head_attention(NoOutputProjection)


# --------------------------------------------------------------------------- the encoder block

class EncoderBlock(nn.Module):
    def __init__(self, num_heads, hidden_dim, mlp_dim, attention=MultiHeadAttention, pre_norm=True,
                 activation=nn.GELU):
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden_dim, eps=1e-6)
        self.attention = attention(hidden_dim, num_heads)
        self.ln_2 = nn.LayerNorm(hidden_dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(hidden_dim, mlp_dim), activation(), nn.Linear(mlp_dim, hidden_dim))
        self.pre_norm = pre_norm

    def forward(self, x):  # x: (N, S, D)
        if self.pre_norm:  # Dosovitskiy et al. 2021, equations 2-3
            x = x + self.attention(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))
        x = self.ln_1(x + self.attention(x))  # the original Transformer's post-norm (Vaswani et al. 2017)
        return self.ln_2(x + self.mlp(x))


@pytest.mark.parametrize("attention", [MultiHeadAttention, TorchMultiHeadAttention],
                         ids=["by hand", "nn.MultiheadAttention"])
def test_encoder_block_check_passes_on_correct_blocks(attention, capsys):
    checks.check_encoder_block(lambda h, d, m: EncoderBlock(h, d, m, attention=attention))
    assert "EncoderBlock: all 2 cases passed" in capsys.readouterr().out


def test_encoder_block_check_fails_on_the_stub():
    with pytest.raises(AssertionError, match="not implemented yet"):
        checks.check_encoder_block(stub)


def test_encoder_block_check_fails_on_post_norm():
    with pytest.raises(AssertionError, match=r"(?s)EncoderBlock\(num_heads=4.*the reference's layer_norm \(ln_1, "
                                             r"LayerNorm\).*at its place the learner's model applies matmul"):
        checks.check_encoder_block(lambda h, d, m: EncoderBlock(h, d, m, pre_norm=False))


def test_encoder_block_check_fails_on_an_mlp_without_gelu():
    with pytest.raises(AssertionError, match=r"(?s)EncoderBlock\(num_heads=4.*gelu"):
        checks.check_encoder_block(lambda h, d, m: EncoderBlock(h, d, m, activation=nn.Identity))


def test_encoder_block_check_fails_on_relu_instead_of_gelu():
    with pytest.raises(AssertionError, match=r"(?s)EncoderBlock\(num_heads=4.*gelu"):
        checks.check_encoder_block(lambda h, d, m: EncoderBlock(h, d, m, activation=nn.ReLU))


def test_encoder_block_check_fails_on_the_default_layer_norm_eps():
    class DefaultEps(EncoderBlock):
        def __init__(self, num_heads, hidden_dim, mlp_dim):
            super().__init__(num_heads, hidden_dim, mlp_dim)
            self.ln_1, self.ln_2 = nn.LayerNorm(hidden_dim), nn.LayerNorm(hidden_dim)  # eps 1e-5

    with pytest.raises(AssertionError, match=r"(?s)EncoderBlock\(num_heads=4.*layer_norm \(ln_1, LayerNorm\) with "
                                             r"eps=1e-05, the reference's has eps=1e-06"):
        checks.check_encoder_block(DefaultEps)


# --------------------------------------------------------------------------- split mode, as under course-grade
# Under ``course-grade`` a check runs in the grader's process on handles of the learner's objects
# (``learner.Loopback`` runs that protocol in this process, every message encoded to bytes): right answers must
# pass there too, and wrong ones fail with the message they get in the learner's notebook.

@pytest.mark.parametrize("check, namespace, summary", [
    (checks.check_patch_embedding, {"patch_embedding": embed_by_conv}, "patch_embedding: all 3 cases passed"),
    (checks.check_scaled_dot_product_attention, {"scaled_dot_product_attention": attention_by_einsum},
     "scaled_dot_product_attention: all 3 cases passed"),
    (checks.check_multi_head_attention, {"MultiHeadAttention": MultiHeadAttention},
     "MultiHeadAttention: all 3 cases passed"),
    (checks.check_multi_head_attention, {"MultiHeadAttention": TorchMultiHeadAttention},
     "MultiHeadAttention: all 3 cases passed"),
    (checks.check_encoder_block, {"EncoderBlock": EncoderBlock}, "EncoderBlock: all 2 cases passed"),
], ids=["patch_embedding", "attention", "MultiHeadAttention", "nn.MultiheadAttention", "EncoderBlock"])
def test_right_answers_pass_in_split_mode(check, namespace, summary, capsys):
    assert split_verdict(check, namespace) is None
    assert summary in capsys.readouterr().out


@pytest.mark.parametrize("check, namespace, message", [
    (checks.check_patch_embedding, {"patch_embedding": stub}, "patch_embedding is not implemented yet"),
    (checks.check_scaled_dot_product_attention, {"scaled_dot_product_attention": stub},
     "scaled_dot_product_attention is not implemented yet"),
    (checks.check_multi_head_attention, {"MultiHeadAttention": stub}, "MultiHeadAttention is not implemented yet"),
    (checks.check_encoder_block, {"EncoderBlock": stub}, "EncoderBlock is not implemented yet"),
    (checks.check_patch_embedding, {"patch_embedding": lambda *a: embed_by_unfold(*a, view=True)},
     r"images \(2, 3, 32, 32\).*`F.unfold\(...\)` followed by `.view"),
    (checks.check_patch_embedding, {"patch_embedding": lambda *a: embed_by_unfold(*a, cls_last=True)},
     r"class token placed after the patches"),
    (checks.check_patch_embedding, {"patch_embedding": lambda *a: embed_by_conv(*a).numpy()},
     r"the tokens should be a torch.Tensor; got ndarray"),
    (checks.check_scaled_dot_product_attention,
     {"scaled_dot_product_attention": lambda q, k, v: attention_by_hand(q, k, v, softmax_dim=-2)},
     r"a softmax over the queries"),
    (checks.check_scaled_dot_product_attention,
     {"scaled_dot_product_attention": lambda q, k, v: attention_by_hand(q, k, v, scale=False)}, r"no 1/sqrt\(d\)"),
    (checks.check_multi_head_attention, {"MultiHeadAttention": lambda d, h: MultiHeadAttention(d, h, split="wrong")},
     r"num_heads=4.*multi_head_attention_forward.*heads split"),
    (checks.check_multi_head_attention, {"MultiHeadAttention": lambda d, h: MultiHeadAttention},
     r"MultiHeadAttention should return an nn.Module; got type"),
    (checks.check_encoder_block, {"EncoderBlock": lambda h, d, m: EncoderBlock(h, d, m, pre_norm=False)},
     r"EncoderBlock\(num_heads=4.*the reference's layer_norm \(ln_1, LayerNorm\).*applies matmul"),
    (checks.check_encoder_block, {"EncoderBlock": lambda h, d, m: EncoderBlock(h, d, m, activation=nn.ReLU)},
     r"EncoderBlock\(num_heads=4.*gelu"),
], ids=["patch_embedding stub", "attention stub", "MultiHeadAttention stub", "EncoderBlock stub", "view after unfold",
        "class token last", "a NumPy array", "softmax over the queries", "no scale", "heads split wrongly",
        "a class returned", "post-norm", "ReLU"])
def test_wrong_answers_fail_with_the_same_message_in_split_mode(check, namespace, message):
    assert_same_failure(check, namespace, message)
