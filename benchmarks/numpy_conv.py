"""How fast is ``course_utils.numpy_nn.conv2d_forward_fast`` / ``conv2d_backward_fast`` next to PyTorch?

    python benchmarks/numpy_conv.py [--repeats 25] [--warmup 3] [--json PATH]

Targets (issue): forward within 1.5x of ``torch.nn.functional.conv2d`` and backward within
2x of its autograd backward (dx, dw, db), on the CPU, for input (32, 64, 32, 32), weight
(64, 64, 3, 3), padding 1, float32. The machine may be shared, so absolute times are noisy:
every implementation runs once per round, rounds are repeated, and each row reports the
median time and its ratio to PyTorch's median from the same rounds (the issue's reference
figures, PyTorch at about 19 ms, were taken this way), then the fastest round's time and
ratio. A plain im2col (``sliding_window_view`` + ``tensordot``) forward is timed for reference.

A second table times each implementation **in a block of its own**, after 20 warm-up calls,
the way a training loop calls it. This is the fair comparison, and the two ways disagree about
PyTorch: oneDNN's convolution gets much faster once warm in a block (about 7-8 ms here, near
this CPU's float32 peak, against 12-45 ms when every call follows a NumPy call, whose BLAS
threads still spin and whose memory traffic evicts PyTorch's caches). The interleaved ratios
therefore flatter NumPy. Two more rows bound what any pure-NumPy convolution can do here:

* NumPy's matrix product of the im2col size alone, the floor of every GEMM-based convolution
  (OpenBLAS runs this tall, narrow product at about half of its square-matrix speed); it is
  itself 1.5-2.1x PyTorch's warm forward, so the 1.5x forward target cannot be met that way.
  Likewise the backward's two products (for dx and dw) alone are 1.4-1.5x PyTorch's warm
  backward, which leaves little room under the 2x backward target for the window copies.
* An experimental Winograd F(4x4, 3x3) forward (``winograd_forward`` below), which needs 4x
  fewer multiplications but more passes over memory; it is about 2.5x PyTorch's warm forward.

The backward rows time the backward alone: the PyTorch graph is built once and
``torch.autograd.grad(..., retain_graph=True)`` is timed; the NumPy cache is built once.
The times come from ``course_utils.timing`` (``time_interleaved``, then ``time_call``).
Nothing is written unless ``--json PATH`` is given.

On a busy machine (load average above the CPU count) every time grows, NumPy's more than
PyTorch's: OpenBLAS splits each matrix product evenly between its threads, which wait for
each other, so one thread that loses its core delays the whole product. The best-round
columns are then the better guide to what the code does on an idle machine.
"""
import argparse
import ctypes
import glob
import json
import os
import platform

import numpy as np
import torch
import torch.nn.functional as F
from numpy.lib.stride_tricks import sliding_window_view

from course_utils.numpy_nn.fast_conv import conv2d_backward_fast, conv2d_forward_fast
from course_utils.timing import time_call, time_interleaved

X_SHAPE = (32, 64, 32, 32)  # (N, C, H, W)
W_SHAPE = (64, 64, 3, 3)  # (F, C, KH, KW), scaled by 1/sqrt(C*KH*KW)
PADDING = 1


def im2col_tensordot_forward(x, w, b, padding):
    """The straightforward im2col, stride 1: a window view, then one tensordot."""
    x_pad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))  # (N, C, Hp, Wp)
    KH, KW = w.shape[2:]
    windows = sliding_window_view(x_pad, (KH, KW), axis=(2, 3))  # (N, C, H_out, W_out, KH, KW), a view
    out = np.tensordot(windows, w, axes=([1, 4, 5], [1, 2, 3]))  # (N, H_out, W_out, F)
    return out.transpose(0, 3, 1, 2) + b[:, None, None]  # (N, F, H_out, W_out)


# Winograd F(4x4, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016): a 6x6 input
# tile d and a 3x3 filter g give the 4x4 output tile  A^T [(G g G^T) * (B^T d B)] A  with 36 multiplications
# instead of 144. With the channel sum inside, the 36 products become 36 matrix products of (tiles, C) @ (C, F).
WINOGRAD_BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                        [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=np.float32)  # (6, 6)
WINOGRAD_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                       [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=np.float32)  # (6, 3)
WINOGRAD_AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                        [0, 1, -1, 8, -8, 1]], dtype=np.float32)  # (4, 6)


def winograd_forward(x, w, b, padding, workspace):
    """Experiment, not course code: 3x3 stride-1 convolution by Winograd F(4x4, 3x3), channels last.

    It cuts the multiplications of the matrix products 4x (the 13% of tiles past the border aside) but adds
    passes over memory: channels-last padding, gathering the 36 tile positions, the input and output transforms
    (as matrix products with kron(B^T, B^T) and kron(A^T, A^T)) and the way back to (N, F, H_out, W_out).
    ``workspace`` (a dict) keeps the intermediate arrays between calls, as a library's workspace would: on this
    virtual machine a fresh large array costs a page fault per 4 KiB touched, which would otherwise take about
    a third of the time.
    """

    def scratch(name, shape):
        if name not in workspace or workspace[name].shape != shape:
            workspace[name] = np.empty(shape, dtype=x.dtype)
        return workspace[name]

    N, C, H, W = x.shape
    F_ = w.shape[0]
    H_out, W_out = H + 2 * padding - 2, W + 2 * padding - 2
    TH, TW = -(-H_out // 4), -(-W_out // 4)  # tiles down and across
    T = N * TH * TW  # tiles in the batch
    x_pad = scratch("x_pad", (N, 4 * TH + 2, 4 * TW + 2, C))  # (N, Hq, Wq, C), channels last
    x_pad.fill(0)
    x_pad[:, padding:padding + H, padding:padding + W] = x.transpose(0, 2, 3, 1)  # (N, H, W, C)
    tiles = scratch("tiles", (6, 6, N, TH, TW, C))  # tile element (i, j) of every tile
    for i in range(6):
        for j in range(6):
            tiles[i, j] = x_pad[:, i:i + 4 * TH:4, j:j + 4 * TW:4]  # (N, TH, TW, C)
    V = np.matmul(np.kron(WINOGRAD_BT, WINOGRAD_BT), tiles.reshape(36, T * C),
                  out=scratch("V", (36, T * C)))  # (36, T*C): B^T d B, element (a, b)
    U = WINOGRAD_G @ w @ WINOGRAD_G.T  # (F, C, 6, 6): G g G^T
    U = np.ascontiguousarray(U.transpose(2, 3, 1, 0)).reshape(36, C, F_)  # (36, C, F)
    M = np.matmul(V.reshape(36, T, C), U, out=scratch("M", (36, T, F_)))  # (36, T, F): one product per (a, b)
    Y = np.matmul(np.kron(WINOGRAD_AT, WINOGRAD_AT), M.reshape(36, T * F_),
                  out=scratch("Y", (16, T * F_)))  # (16, T*F): A^T M A, output element (p, q)
    out_tiles = scratch("out_tiles", (N, TH, 4, TW, 4, F_))  # (N, TH, 4, TW, 4, F)
    out_tiles[...] = Y.reshape(4, 4, N, TH, TW, F_).transpose(2, 3, 0, 4, 1, 5)
    out_nhwc = out_tiles.reshape(N, 4 * TH, 4 * TW, F_)[:, :H_out, :W_out]  # (N, H_out, W_out, F)
    out = np.empty((N, F_, H_out, W_out), dtype=x.dtype)
    np.add(out_nhwc.transpose(0, 3, 1, 2), b[:, None, None], out=out)  # (N, F, H_out, W_out)
    return out


def blas_info():
    """NumPy's BLAS library and its thread count, as far as they can be found out."""
    info = {"numpy": np.__version__, "blas": "unknown", "blas_threads": None}
    try:
        config = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["blas"] = f"{config.get('name')} {config.get('version')}"
    except Exception:  # older NumPy: no dict mode
        pass
    try:
        from threadpoolctl import threadpool_info

        pools = [pool for pool in threadpool_info() if pool.get("user_api") == "blas"]
        if pools:
            info["blas_threads"] = pools[0]["num_threads"]
            info["blas_core"] = pools[0].get("architecture")
            return info
    except ImportError:
        pass
    # without threadpoolctl: ask the OpenBLAS bundled with the NumPy wheel directly
    libs_dir = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    for path in glob.glob(os.path.join(libs_dir, "*openblas*")):
        lib = ctypes.CDLL(path)
        for prefix, suffix in (("scipy_", "64_"), ("scipy_", ""), ("", "64_"), ("", "")):
            try:
                get_threads = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}")
                get_core = getattr(lib, f"{prefix}openblas_get_corename{suffix}")
            except AttributeError:
                continue
            get_core.restype = ctypes.c_char_p
            info["blas_threads"] = int(get_threads())
            info["blas_core"] = get_core().decode()
            return info
    return info


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=25, help="interleaved rounds (at least 20 for the report)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    parser.add_argument("--json", metavar="PATH", help="also write the results to this JSON file")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.standard_normal(X_SHAPE, dtype=np.float32)  # (N, C, H, W)
    w = rng.standard_normal(W_SHAPE, dtype=np.float32) / 24.0  # (F, C, KH, KW), scaled by 1/sqrt(C*KH*KW)
    b = rng.standard_normal(W_SHAPE[0], dtype=np.float32)  # (F,)
    x_t, w_t, b_t = (torch.from_numpy(a.copy()).requires_grad_() for a in (x, w, b))

    out_t = F.conv2d(x_t, w_t, b_t, padding=PADDING)  # the graph the backward rows reuse
    dout = rng.standard_normal(tuple(out_t.shape), dtype=np.float32)  # (N, F, H_out, W_out)
    dout_t = torch.from_numpy(dout)
    out, cache = conv2d_forward_fast(x, w, b, padding=PADDING)

    # the timings only mean something if the results agree
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-4, atol=1e-4)
    # Winograd trades accuracy for speed: errors about 20x those of a direct float32 sum, still below 1e-4 here
    np.testing.assert_allclose(winograd_forward(x, w, b, PADDING, {}), out_t.detach().numpy(), rtol=1e-4, atol=1e-4)
    grads_t = torch.autograd.grad(out_t, (x_t, w_t, b_t), dout_t, retain_graph=True)
    for name, mine, ref in zip(("dx", "dw", "db"), conv2d_backward_fast(dout, cache), grads_t):
        scale = float(np.abs(ref.numpy()).max())
        np.testing.assert_allclose(mine, ref.numpy(), rtol=1e-4, atol=1e-4 * scale, err_msg=name)

    def torch_forward():
        with torch.no_grad():
            F.conv2d(x_t, w_t, b_t, padding=PADDING)

    functions = {
        "torch forward": torch_forward,
        "numpy fast forward": lambda: conv2d_forward_fast(x, w, b, padding=PADDING),
        "numpy im2col (sliding_window_view + tensordot) forward": lambda: im2col_tensordot_forward(x, w, b, PADDING),
        "torch backward": lambda: torch.autograd.grad(out_t, (x_t, w_t, b_t), dout_t, retain_graph=True),
        "numpy fast backward": lambda: conv2d_backward_fast(dout, cache),
    }
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    timings = time_interleaved(functions, repeats=args.repeats, warmup=args.warmup)  # one call of each per round
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    medians = {name: timing.median for name, timing in timings.items()}
    # the fastest round is the least disturbed by other work on a shared machine
    bests = {name: timing.best for name, timing in timings.items()}
    reference = {name: "torch forward" if "forward" in name else "torch backward" for name in functions}
    ratios = {name: medians[name] / medians[reference[name]] for name in functions}
    best_ratios = {name: bests[name] / bests[reference[name]] for name in functions}

    info = blas_info()
    env = {name: os.environ.get(name) for name in
           ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    print(f"input {X_SHAPE}, weight {W_SHAPE}, padding {PADDING}, float32; "
          f"median of {args.repeats} interleaved rounds after {args.warmup} warm-up rounds")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; numpy {info['numpy']}, "
          f"BLAS {info['blas']}, {info['blas_threads']} threads, core {info.get('blas_core')}; "
          f"{platform.machine()}, {os.cpu_count()} CPUs")
    print("environment: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    busy = load_before > os.cpu_count() - 1  # the benchmark itself adds about its own thread count
    print(f"1-minute load average before/after: {load_before:.2f}/{load_after:.2f}"
          + (" (other work was competing for the cores: ratios are unreliable)" if busy else ""))
    print()
    print(f"| {'implementation':<56} | {'median ms':>9} | {'vs torch':>8} | {'best ms':>9} | {'vs torch':>8} |")
    print(f"|{'-' * 58}|{'-' * 10}:|{'-' * 9}:|{'-' * 10}:|{'-' * 9}:|")
    for name in functions:
        print(f"| {name:<56} | {1e3 * medians[name]:9.2f} | {ratios[name]:7.2f}x "
              f"| {1e3 * bests[name]:9.2f} | {best_ratios[name]:7.2f}x |")
    print()
    for name, target in (("numpy fast forward", 1.5), ("numpy fast backward", 2.0)):
        verdict = "met" if ratios[name] <= target else "NOT met"
        print(f"{name}: target <= {target}x of torch; median ratio {ratios[name]:.2f}x ({verdict}), "
              f"best-round ratio {best_ratios[name]:.2f}x")

    # Each implementation alone, warm, in a block of calls; plus the GEMM floor.
    rng = np.random.default_rng(1)
    cols = rng.standard_normal((X_SHAPE[0] * X_SHAPE[2] * X_SHAPE[3], W_SHAPE[1] * 9)).astype(np.float32)
    filters = rng.standard_normal((W_SHAPE[1] * 9, W_SHAPE[0])).astype(np.float32)
    block_functions = dict(functions)
    block_functions["numpy GEMM alone (N*H*W, C*KH*KW) @ (C*KH*KW, F)"] = lambda: cols @ filters
    # the backward's floor: dx's product has the forward's shape (F and C swap), dw's sums over N*H*W
    dout_rows = rng.standard_normal((X_SHAPE[0] * X_SHAPE[2] * X_SHAPE[3], W_SHAPE[0])).astype(np.float32)

    def backward_gemms():
        cols @ filters  # dx: (N*H*W, F*KH*KW) @ (F*KH*KW, C), the same sizes as C = F = 64
        cols.T @ dout_rows  # dw: (C*KH*KW, N*H*W) @ (N*H*W, F)

    block_functions["numpy backward GEMMs alone (dx and dw products)"] = backward_gemms
    workspace = {}
    block_functions["numpy Winograd F(4x4,3x3) forward (experiment)"] = lambda: winograd_forward(
        x, w, b, PADDING, workspace)
    block_medians = {name: time_call(function, repeats=20, warmup=20).median  # consecutive calls, warm
                     for name, function in block_functions.items()}
    print()
    print("each implementation in a block of its own, after 20 warm-up calls (median of 20):")
    print(f"| {'implementation':<56} | {'median ms':>9} | {'vs torch':>8} |")
    print(f"|{'-' * 58}|{'-' * 10}:|{'-' * 9}:|")
    for name, seconds in block_medians.items():
        torch_name = "torch backward" if "backward" in name else "torch forward"
        print(f"| {name:<56} | {1e3 * seconds:9.2f} | {seconds / block_medians[torch_name]:7.2f}x |")
    print()
    for name, target in (("numpy fast forward", 1.5), ("numpy fast backward", 2.0)):
        ratio = block_medians[name] / block_medians[name.replace("numpy fast", "torch")]
        print(f"{name}, in blocks: {ratio:.2f}x of torch ({'met' if ratio <= target else 'NOT met'}, target {target}x)")

    if args.json:
        result = {
            "block_median_seconds": block_medians,
            "x_shape": X_SHAPE, "w_shape": W_SHAPE, "padding": PADDING, "dtype": "float32",
            "repeats": args.repeats, "warmup": args.warmup,
            "median_seconds": medians, "ratio_to_torch": ratios,
            "best_seconds": bests, "best_ratio_to_torch": best_ratios,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "environment": env,
            "load_average_before_after": [load_before, load_after], **info,
        }
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
