"""Checking and timing the implementations against each other.

agreement (every peer's output against libmoe's on the tokens routed alike), the rotating input
buffers, timed calls, CUDA graph capture, and run_one, which does all of it for one preset at
one T and returns the result row.
"""

import math
import statistics
import sys
import time

import torch

from .libmoe_ctypes import MoeError
from .torch_layers import grouped_forward, loop_forward, torch_route

TARGET_VS_GROUPED = 1.3
TARGET_VS_LOOP = 10.0
MAX_TIE_FRACTION = 0.01  # tokens whose expert set may differ from libmoe's (near-ties)


# ---------------------------------------------------------------------------------------------
# Agreement
# ---------------------------------------------------------------------------------------------
def rel_fro(a, b, rows):
    """||a - b||_F / ||b||_F over the selected rows, in fp64."""
    a, b = a[rows].double(), b[rows].double()
    den = torch.linalg.norm(b).item()
    return torch.linalg.norm(a - b).item() / den if den > 0 else torch.linalg.norm(a).item()


def agreement(layer, x, outputs, p, tol, stream, other_ids=None):
    """Compares every output with libmoe's on the tokens whose expert set agrees with libmoe's.

    The torch peers route with torch_route; other_ids (the transformers block's own routing,
    when it runs) must agree too for a token to be compared.

    Returns a dict: tie_fraction (tokens whose expert sets differ: near-ties flipped by fp32
    summation order), max_weight_diff (routing weights of the agreeing tokens), rel_err per
    peer, and ok (every rel_err <= tol and tie_fraction <= MAX_TIE_FRACTION).
    """
    ids_moe, w_moe = layer.route(x, stream)
    ids_t, w_t = torch_route(x, p)
    s_moe, o_moe = torch.sort(ids_moe.long(), dim=-1)
    s_t, o_t = torch.sort(ids_t, dim=-1)
    same = (s_moe == s_t).all(dim=-1)
    if other_ids is not None:
        same &= (s_moe == torch.sort(other_ids.long(), dim=-1)[0]).all(dim=-1)
    rows = same.nonzero().flatten()
    res = {"tokens": x.shape[0], "tie_fraction": 1.0 - rows.numel() / max(x.shape[0], 1)}
    wdiff = (w_moe.gather(1, o_moe) - w_t.gather(1, o_t)).abs()[rows]
    res["max_weight_diff"] = wdiff.max().item() if wdiff.numel() else 0.0
    ref = outputs["libmoe"]
    res["rel_err"] = {n: rel_fro(y, ref, rows) for n, y in outputs.items() if n != "libmoe"}
    res["ok"] = bool(
        rows.numel() > 0
        and res["tie_fraction"] <= MAX_TIE_FRACTION
        and all(v <= tol for v in res["rel_err"].values())
    )
    return res


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------
def buffer_count(tokens, p, cuda):
    """Rotating input buffers: enough that x spans twice the L2 (GPU), 4..32; 2 on the CPU."""
    if not cuda:
        return 2
    l2 = getattr(torch.cuda.get_device_properties(p.device), "L2_cache_size", 50 << 20)
    need = 2.0 * l2 / (tokens * p.hidden * torch.finfo(p.dtype).bits / 8)
    return int(min(32, max(4, math.ceil(need))))


def median_us(times_s):
    """Median of a list of seconds, in microseconds."""
    return statistics.median(times_s) * 1e6


def time_calls(calls, warmup, iters, max_time, cuda):
    """Times calls[i % len(calls)]() one at a time; returns the median us and the count.

    GPU: a pair of torch.cuda.Event around each call on the current stream. CPU: perf_counter.
    The number of timed calls is iters, cut to what fits in max_time seconds (at least 5).
    """
    for i in range(warmup):
        calls[i % len(calls)]()
    if cuda:
        torch.cuda.synchronize()
    # One call to size the loop.
    t0 = time.perf_counter()
    calls[0]()
    if cuda:
        torch.cuda.synchronize()
    one = max(time.perf_counter() - t0, 1e-6)
    n = int(max(5, min(iters, max_time / one)))
    times = []
    if cuda:
        events = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            for _ in range(n)
        ]
        for i, (a, b) in enumerate(events):
            a.record()
            calls[i % len(calls)]()
            b.record()
        torch.cuda.synchronize()
        times = [a.elapsed_time(b) * 1e-3 for a, b in events]
    else:
        for i in range(n):
            t0 = time.perf_counter()
            calls[i % len(calls)]()
            times.append(time.perf_counter() - t0)
    return median_us(times), n


def capture_graphs(fns, pool):
    """Captures each fn in its own CUDA graph (shared memory pool); returns the replay calls.

    Warm-up runs on a side stream first, as torch requires. Thread-local capture mode, as
    moe-bench captures libmoe (bench/bench_gpu.c). CUDAGraph.capture_begin/end directly rather
    than torch.cuda.graph, which collects garbage and empties the cache before every capture
    (up to 32 graphs per T). Raises on a capture failure.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for fn in fns:
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graphs = []
    with torch.cuda.stream(side):
        for fn in fns:
            g = torch.cuda.CUDAGraph()
            g.capture_begin(pool=pool, capture_error_mode="thread_local")
            try:
                fn()
            except BaseException:
                try:
                    g.capture_end()
                except RuntimeError:
                    pass
                raise
            g.capture_end()
            graphs.append(g)
    torch.cuda.synchronize()
    return [g.replay for g in graphs]


# ---------------------------------------------------------------------------------------------
# One preset, one T
# ---------------------------------------------------------------------------------------------
def run_one(layer, p, tokens, args, gmm, hf, cuda):
    """Checks and times the three implementations at one T; returns the result row."""
    nbuf = buffer_count(tokens, p, cuda)
    xs = p.inputs(tokens, nbuf)
    layer.reserve(tokens)
    row = {
        "preset": p.preset["name"],
        "T": tokens,
        "H": p.hidden,
        "I": p.intermediate,
        "E": p.preset["num_experts"],
        "k": p.preset["top_k"],
        "input_buffers": nbuf,
    }
    # Agreement on buffer 0, eagerly, the peers routing with the fp32 router.
    p.route_weight = p.router
    y_moe = torch.empty_like(xs[0])
    stream = torch.cuda.current_stream().cuda_stream if cuda else None
    layer.forward(xs[0], y_moe, stream)
    outputs = {"libmoe": y_moe, "loop": loop_forward(xs[0], p)}
    if gmm["enabled"]:
        outputs["grouped_mm"] = grouped_forward(xs[0], p, gmm["native"])
    hf_ids = None
    if hf:
        outputs["transformers"], hf_ids = hf(xs[0])
    if cuda:
        torch.cuda.synchronize()
    row["check"] = agreement(layer, xs[0], outputs, p, args.tol, stream, hf_ids)
    del outputs
    if args.no_timing:
        return row

    ys = [torch.empty_like(x) for x in xs]
    p.route_weight = p.peer_router  # what the peers are timed with (--peer-router)

    def moe_call(i):
        return lambda: layer.forward(
            xs[i], ys[i], torch.cuda.current_stream().cuda_stream if cuda else None
        )

    impls = {}
    if cuda:
        pool = torch.cuda.graph_pool_handle()
        # libmoe: forward once outside any capture, then one graph per input buffer.
        layer.forward(xs[0], ys[0], torch.cuda.current_stream().cuda_stream)
        try:
            impls["libmoe"] = (capture_graphs([moe_call(i) for i in range(nbuf)], pool), "graph")
        except (RuntimeError, MoeError) as exc:
            print(
                f"  libmoe T={tokens}: not capturable ({exc}); timing plain launches",
                file=sys.stderr,
            )
            impls["libmoe"] = ([moe_call(i) for i in range(nbuf)], "eager")
        if gmm["enabled"]:
            fns = [(lambda x=x: grouped_forward(x, p, gmm["native"])) for x in xs]
            mode = "eager"
            if gmm["native"]:
                try:
                    fns, mode = capture_graphs(fns, pool), "graph"
                except RuntimeError as exc:
                    print(
                        f"  grouped_mm T={tokens}: capture failed ({str(exc).splitlines()[0]}); "
                        "timing eagerly",
                        file=sys.stderr,
                    )
                    torch.cuda.synchronize()
            impls["grouped_mm"] = (fns, mode)
    else:
        impls["libmoe"] = ([moe_call(i) for i in range(nbuf)], "wall-clock")
        if gmm["enabled"]:
            impls["grouped_mm"] = (
                [(lambda x=x: grouped_forward(x, p, gmm["native"])) for x in xs],
                "wall-clock",
            )
    impls["loop"] = (
        [(lambda x=x: loop_forward(x, p)) for x in xs],
        "eager" if cuda else "wall-clock",
    )
    if hf:
        impls["transformers"] = (
            [(lambda x=x: hf(x)) for x in xs],
            "eager" if cuda else "wall-clock",
        )

    row["us"], row["mode"], row["iters"] = {}, {}, {}
    for name, (calls, mode) in impls.items():
        us, n = time_calls(calls, args.warmup, args.iters, args.max_time, cuda)
        row["us"][name], row["mode"][name], row["iters"][name] = us, mode, n
    del impls
    us = row["us"]
    row["speedup_vs_grouped_mm"] = us["grouped_mm"] / us["libmoe"] if "grouped_mm" in us else None
    row["speedup_vs_loop"] = us["loop"] / us["libmoe"]
    if "transformers" in us:
        row["speedup_vs_transformers"] = us["transformers"] / us["libmoe"]
    row["target_grouped_mm_met"] = (
        row["speedup_vs_grouped_mm"] is not None
        and row["speedup_vs_grouped_mm"] >= TARGET_VS_GROUPED
    )
    row["target_loop_met"] = row["speedup_vs_loop"] >= TARGET_VS_LOOP
    return row
