"""How fast are ``numpy_nn.conv2d_forward_fast`` / ``conv2d_backward_fast`` next to their GEMM floors and PyTorch?

    python benchmarks/numpy_conv.py [--rounds 5] [--block 5] [--repeats 10] [--warmup 3] [--json PATH]
    python benchmarks/numpy_conv.py --chunk-sizes 0.5,1,2,4,8,16,64   # the chunk-size study only

The layer: input (32, 64, 32, 32), weight (64, 64, 3, 3), padding 1, float32, on the CPU.

Targets (issue 15): the forward within 1.25x of the one matrix product it cannot avoid,
(N*H*W, C*KH*KW) @ (C*KH*KW, F), and the backward within 1.35x of its two products, the dx
product of the same shape (F and C swap; here C = F) and the dw product
(C*KH*KW, N*H*W) @ (N*H*W, F). These **floors** are timed on preallocated operands of those
shapes, results written with ``out=`` into preallocated arrays: the products alone, nothing
else. (Issue 3 showed that PyTorch's warm oneDNN convolution is itself faster than that
forward floor here, so "1.5x of PyTorch" is out of reach of any GEMM-based NumPy convolution.)

A ratio **below 1** is possible and not a mistake: the floor multiplies the whole im2col matrix
(75 MB, far larger than the cache) in one product that streams it from memory, while the fast
version multiplies one image's 2.4 MB at a time, read back from the cache where its copy has just
put it, on both cores at once (see ``course_utils/numpy_nn/fast_conv.py``); the time the cache
saves pays for the copies. ``--chunk-sizes`` times the fast passes against the same floors for
several chunk sizes (``fast_conv._CHUNK_BYTES``, in MiB): the study behind its value.

How it is timed. Each function runs **warm in a block of its own** (``--warmup`` untimed calls,
then the median of ``--block`` calls, ``course_utils.timing.time_call``), the way a training
loop calls a layer. The machine may be shared, so the floor and the implementations alternate
in nearby blocks, floor - implementations - floor, and each ratio is an implementation's block
over the mean of the two floor blocks around it; this **round** is repeated ``--rounds`` times and
the report gives the median ratio and the range over rounds. The implementations are timed
without a workspace (the teaching interface: every call allocates its buffers) and with a
``Conv2dWorkspace`` (buffers reused; a fresh large array costs a page fault per 4 KiB on a
virtual machine). PyTorch's convolution (forward under ``no_grad``, backward by
``torch.autograd.grad(..., retain_graph=True)`` on a graph built once) is timed in the same
rounds, and an experimental Winograd F(4x4, 3x3) forward (``winograd_forward`` below) once per round.

A first table (kept from issue 3) runs every function once per round, interleaved, as
``course_utils.timing.time_interleaved`` does: PyTorch is much slower there than warm in a block,
as every call follows a NumPy call whose BLAS threads still spin and whose memory traffic has
evicted its caches; the interleaved ratios to PyTorch therefore flatter NumPy.

On a busy machine (load average above the CPU count) every time grows, NumPy's more than
PyTorch's: OpenBLAS splits each matrix product evenly between its threads, which wait for
each other, so one thread that loses its core delays the whole product. The load average
before and after is printed; nothing is written unless ``--json PATH`` is given.
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

from course_utils.numpy_nn.fast_conv import Conv2dWorkspace, conv2d_backward_fast, conv2d_forward_fast
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


def floor_operands(rng):
    """Preallocated operands and outputs of the forward's GEMM and the backward's two GEMMs."""
    N, C, H, W = X_SHAPE
    F_out, _, KH, KW = W_SHAPE
    cols = rng.standard_normal((N * H * W, C * KH * KW), dtype=np.float32)  # (N*H*W, C*KH*KW)
    filters = rng.standard_normal((C * KH * KW, F_out), dtype=np.float32)  # (C*KH*KW, F)
    dout_rows = rng.standard_normal((N * H * W, F_out), dtype=np.float32)  # (N*H*W, F)
    out_rows = np.empty((N * H * W, F_out), dtype=np.float32)  # (N*H*W, F)
    dw_rows = np.empty((C * KH * KW, F_out), dtype=np.float32)  # (C*KH*KW, F)

    def forward_gemm():
        np.matmul(cols, filters, out=out_rows)  # (N*H*W, C*KH*KW) @ (C*KH*KW, F)

    def backward_gemms():
        np.matmul(cols, filters, out=out_rows)  # dx: (N*H*W, F*KH*KW) @ (F*KH*KW, C), the same sizes as C = F
        np.matmul(cols.T, dout_rows, out=dw_rows)  # dw: (C*KH*KW, N*H*W) @ (N*H*W, F)

    return forward_gemm, backward_gemms


def floor_rounds(floors, implementations, rounds, block, warmup):
    """Per round: floor block, each implementation's block, floor block again.

    Args:
        floors: {"forward": fn, "backward": fn}.
        implementations: {name: (pass name, fn)}, pass name "forward" or "backward".
        rounds, block, warmup: rounds; timed calls per block; untimed calls before each block.

    Returns:
        (ratios, seconds): {name: [ratio to the mean of its round's two floor blocks, per round]},
        {name or "floor forward"/"floor backward": [block median seconds, per round]}.
    """
    ratios = {name: [] for name in implementations}
    seconds = {name: [] for name in implementations}
    seconds.update({f"floor {kind}": [] for kind in floors})
    for _ in range(rounds):
        for kind, floor in floors.items():
            before = time_call(floor, repeats=block, warmup=warmup).median
            timed = {name: time_call(fn, repeats=block, warmup=warmup).median
                     for name, (pass_name, fn) in implementations.items() if pass_name == kind}
            after = time_call(floor, repeats=block, warmup=warmup).median
            seconds[f"floor {kind}"].append((before + after) / 2)
            for name, value in timed.items():
                seconds[name].append(value)
                ratios[name].append(value / ((before + after) / 2))
    return ratios, seconds


def chunk_size_study(sizes_mib, rounds, block, warmup):
    """Forward and backward ratios to their floors for each chunk size (MiB); prints a table."""
    from course_utils.numpy_nn import fast_conv

    rng = np.random.default_rng(0)
    x = rng.standard_normal(X_SHAPE, dtype=np.float32)  # (N, C, H, W)
    w = rng.standard_normal(W_SHAPE, dtype=np.float32) / 24.0  # (F, C, KH, KW)
    b = rng.standard_normal(W_SHAPE[0], dtype=np.float32)  # (F,)
    forward_gemm, backward_gemms = floor_operands(np.random.default_rng(1))
    default = fast_conv._CHUNK_BYTES
    print(f"input {X_SHAPE}, weight {W_SHAPE}, padding {PADDING}, float32; one image's cols: "
          f"{W_SHAPE[1] * 9 * X_SHAPE[2] * (X_SHAPE[3] + 2) * 4 / 2**20:.2f} MiB; default chunk "
          f"{default / 2**20:g} MiB")
    print(f"| {'chunk (MiB)':>11} | {'forward vs floor':>16} | {'backward vs floor':>17} |")
    print(f"|{'-' * 12}:|{'-' * 17}:|{'-' * 18}:|")
    try:
        for size in sizes_mib:
            fast_conv._CHUNK_BYTES = int(size * 2**20)
            out, cache = conv2d_forward_fast(x, w, b, padding=PADDING)
            dout = np.ones_like(out)  # (N, F, H_out, W_out)
            ratios, _ = floor_rounds(
                {"forward": forward_gemm, "backward": backward_gemms},
                {"forward": ("forward", lambda: conv2d_forward_fast(x, w, b, padding=PADDING)),
                 "backward": ("backward", lambda: conv2d_backward_fast(dout, cache))},
                rounds, block, warmup)
            print(f"| {size:>11g} | {np.median(ratios['forward']):>15.2f}x | {np.median(ratios['backward']):>16.2f}x |")
    finally:
        fast_conv._CHUNK_BYTES = default


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="floor/implementation rounds of blocks")
    parser.add_argument("--block", type=int, default=5, help="timed calls per block (the median is kept)")
    parser.add_argument("--repeats", type=int, default=10, help="rounds of the interleaved table")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before each block and table")
    parser.add_argument("--json", metavar="PATH", help="also write the results to this JSON file")
    parser.add_argument("--chunk-sizes", metavar="MIB,MIB,...",
                        help="only the chunk-size study: the fast passes against their floors for these chunk sizes")
    args = parser.parse_args()
    if args.chunk_sizes:
        chunk_size_study([float(size) for size in args.chunk_sizes.split(",")], args.rounds, args.block, args.warmup)
        return

    rng = np.random.default_rng(0)
    x = rng.standard_normal(X_SHAPE, dtype=np.float32)  # (N, C, H, W)
    w = rng.standard_normal(W_SHAPE, dtype=np.float32) / 24.0  # (F, C, KH, KW), scaled by 1/sqrt(C*KH*KW)
    b = rng.standard_normal(W_SHAPE[0], dtype=np.float32)  # (F,)
    x_t, w_t, b_t = (torch.from_numpy(a.copy()).requires_grad_() for a in (x, w, b))

    out_t = F.conv2d(x_t, w_t, b_t, padding=PADDING)  # the graph the backward rows reuse
    dout = rng.standard_normal(tuple(out_t.shape), dtype=np.float32)  # (N, F, H_out, W_out)
    dout_t = torch.from_numpy(dout)
    out, cache = conv2d_forward_fast(x, w, b, padding=PADDING)
    forward_workspace = Conv2dWorkspace(X_SHAPE, W_SHAPE, padding=PADDING)  # timed forward calls reuse it
    backward_workspace = Conv2dWorkspace(X_SHAPE, W_SHAPE, padding=PADDING)  # holds the timed backward's cache
    _, cache_ws = conv2d_forward_fast(x, w, b, padding=PADDING, workspace=backward_workspace)

    # the timings only mean something if the results agree
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(conv2d_forward_fast(x, w, b, padding=PADDING, workspace=forward_workspace)[0], out)
    # Winograd trades accuracy for speed: errors about 20x those of a direct float32 sum, still below 1e-4 here
    np.testing.assert_allclose(winograd_forward(x, w, b, PADDING, {}), out_t.detach().numpy(), rtol=1e-4, atol=1e-4)
    grads_t = torch.autograd.grad(out_t, (x_t, w_t, b_t), dout_t, retain_graph=True)
    backward_results = (conv2d_backward_fast(dout, cache),
                        conv2d_backward_fast(dout, cache_ws, workspace=backward_workspace))
    for results in backward_results:
        for name, mine, ref in zip(("dx", "dw", "db"), results, grads_t):
            scale = float(np.abs(ref.numpy()).max())
            np.testing.assert_allclose(mine, ref.numpy(), rtol=1e-4, atol=1e-4 * scale, err_msg=name)

    def torch_forward():
        with torch.no_grad():
            F.conv2d(x_t, w_t, b_t, padding=PADDING)

    def torch_backward():
        torch.autograd.grad(out_t, (x_t, w_t, b_t), dout_t, retain_graph=True)

    functions = {
        "torch forward": torch_forward,
        "numpy fast forward": lambda: conv2d_forward_fast(x, w, b, padding=PADDING),
        "numpy im2col (sliding_window_view + tensordot) forward": lambda: im2col_tensordot_forward(x, w, b, PADDING),
        "torch backward": torch_backward,
        "numpy fast backward": lambda: conv2d_backward_fast(dout, cache),
    }
    info = blas_info()
    env = {name: os.environ.get(name) for name in
           ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    timings = time_interleaved(functions, repeats=args.repeats, warmup=args.warmup)  # one call of each per round
    medians = {name: timing.median for name, timing in timings.items()}
    reference = {name: "torch forward" if "forward" in name else "torch backward" for name in functions}

    forward_gemm, backward_gemms = floor_operands(np.random.default_rng(1))
    workspace_winograd = {}
    implementations = {
        "numpy fast forward": ("forward", lambda: conv2d_forward_fast(x, w, b, padding=PADDING)),
        "numpy fast forward, workspace": ("forward", lambda: conv2d_forward_fast(
            x, w, b, padding=PADDING, workspace=forward_workspace)),
        "torch forward": ("forward", torch_forward),
        "numpy Winograd F(4x4,3x3) forward (experiment)": ("forward", lambda: winograd_forward(
            x, w, b, PADDING, workspace_winograd)),
        "numpy fast backward": ("backward", lambda: conv2d_backward_fast(dout, cache)),
        "numpy fast backward, workspace": ("backward", lambda: conv2d_backward_fast(
            dout, cache_ws, workspace=backward_workspace)),
        "torch backward": ("backward", torch_backward),
    }
    ratios, block_seconds = floor_rounds({"forward": forward_gemm, "backward": backward_gemms}, implementations,
                                         args.rounds, args.block, args.warmup)
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    print(f"input {X_SHAPE}, weight {W_SHAPE}, padding {PADDING}, float32")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; numpy {info['numpy']}, "
          f"BLAS {info['blas']}, {info['blas_threads']} threads, core {info.get('blas_core')}; "
          f"{platform.machine()}, {os.cpu_count()} CPUs")
    print("environment: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    busy = load_before > os.cpu_count() - 1  # the benchmark itself adds about its own thread count
    print(f"1-minute load average before/after: {load_before:.2f}/{load_after:.2f}"
          + (" (other work was competing for the cores: ratios are unreliable)" if busy else ""))
    print()
    print(f"interleaved, one call of each per round, median of {args.repeats} rounds:")
    print(f"| {'implementation':<56} | {'median ms':>9} | {'vs torch':>8} |")
    print(f"|{'-' * 58}|{'-' * 10}:|{'-' * 9}:|")
    for name in functions:
        print(f"| {name:<56} | {1e3 * medians[name]:9.2f} | {medians[name] / medians[reference[name]]:7.2f}x |")
    print()
    print(f"each warm in a block of its own ({args.warmup} warm-up calls, median of {args.block}), "
          f"floor - implementations - floor, {args.rounds} rounds; ratio = block / mean of its round's floor blocks:")
    print(f"| {'implementation':<56} | {'median ms':>9} | {'vs floor':>8} | {'range over rounds':>17} "
          f"| {'vs torch':>8} |")
    print(f"|{'-' * 58}|{'-' * 10}:|{'-' * 9}:|{'-' * 18}:|{'-' * 9}:|")
    summary = {}
    for kind in ("forward", "backward"):
        floor_ms = 1e3 * float(np.median(block_seconds[f"floor {kind}"]))
        label = "GEMM floor: (N*H*W, C*KH*KW) @ (C*KH*KW, F)" if kind == "forward" else "GEMM floor: dx and dw products"
        print(f"| {label:<56} | {floor_ms:9.2f} | {1:7.2f}x | {'':>17} | "
              f"{floor_ms / (1e3 * float(np.median(block_seconds['torch ' + kind]))):7.2f}x |")
        for name, (pass_name, _) in implementations.items():
            if pass_name != kind:
                continue
            ratio = float(np.median(ratios[name]))
            ms = 1e3 * float(np.median(block_seconds[name]))
            vs_torch = ms / (1e3 * float(np.median(block_seconds["torch " + kind])))
            spread = f"{min(ratios[name]):.2f}-{max(ratios[name]):.2f}x"
            print(f"| {name:<56} | {ms:9.2f} | {ratio:7.2f}x | {spread:>17} | {vs_torch:7.2f}x |")
            summary[name] = {"median_ms": ms, "ratio_to_floor": ratio, "ratios_per_round": ratios[name],
                             "ratio_to_torch": vs_torch}
    print()
    for name, target in (("numpy fast forward", 1.25), ("numpy fast forward, workspace", 1.25),
                         ("numpy fast backward", 1.35), ("numpy fast backward, workspace", 1.35)):
        ratio = summary[name]["ratio_to_floor"]
        print(f"{name}: {ratio:.2f}x of its GEMM floor (rounds {min(ratios[name]):.2f}-{max(ratios[name]):.2f}x), "
              f"target {target}x: {'met' if ratio <= target else 'NOT met'}")

    if args.json:
        result = {
            "x_shape": X_SHAPE, "w_shape": W_SHAPE, "padding": PADDING, "dtype": "float32",
            "rounds": args.rounds, "block": args.block, "repeats": args.repeats, "warmup": args.warmup,
            "interleaved_median_seconds": medians, "blocks": summary,
            "floor_block_seconds": {kind: block_seconds[f"floor {kind}"] for kind in ("forward", "backward")},
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "environment": env,
            "load_average_before_after": [load_before, load_after], **info,
        }
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
