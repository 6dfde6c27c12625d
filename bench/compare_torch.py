#!/usr/bin/env python3
"""Peer comparison of libmoe's whole MoE layer with two PyTorch layers on the same problem.

For each preset and token count T, one set of seeded random weights and the same inputs x go to

  libmoe       moeLayerForward through ctypes (libmoe.so of a CPU or CUDA build);
  grouped_mm   a layer built on torch._grouped_mm: route, argsort by expert, int32 offsets,
               _grouped_mm(x_sorted, W_gate_up^T [E, H, 2I]), SwiGLU, _grouped_mm for down,
               weighted combine back to token order;
  loop         the per-expert loop of the transformers MoE blocks (Mixtral / Qwen3-MoE style):
               for each expert that has tokens, index them, act(gate) * up -> down, scale by the
               routing weight, index_add_ into the output.

Both torch peers share one routing function written from docs/ROUTING.md (1a, 1b, 2a, 2b), with
the router logits in fp32 as libmoe computes them. The script checks that the three outputs
agree (relative Frobenius error over the tokens whose expert sets agree with libmoe's own
routing, read with moeLayerRoute), then times them and prints the ratios and the targets of the
performance issue (libmoe >= 1.3x grouped_mm and >= 10x the loop at every T).

With --transformers, the actual transformers block of each model (its router in fp32, its
experts class in eager mode) runs as a 4th peer when transformers can be imported.

On a GPU every implementation is captured in CUDA graphs (one per rotating input buffer) except
the loop, which is data-dependent (it reads the routing on the host) and is timed eagerly. On a
CPU-only machine it runs the CPU backend with wall-clock timing: there the agreement checks are
the point, not the ratios.
"""

import argparse
import ctypes
import json
import os
import platform
import subprocess
import sys
import time

try:
    import torch
except ModuleNotFoundError:  # a one-line reason, not a traceback
    sys.exit(f"compare_torch.py: needs PyTorch, which {sys.executable} cannot import "
             "(python3 -m pip install torch)")

# The pieces of the comparison are in the package peers/ beside this script. Python puts the
# script's directory first on the path, but not under -P or PYTHONSAFEPATH: put it there.
sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

# pylint: disable=wrong-import-position
from peers.libmoe_ctypes import MOE_DTYPE, LibmoeLayer, MoeError, check, check_abi, load_libmoe
from peers.measure import MAX_TIE_FRACTION, TARGET_VS_GROUPED, TARGET_VS_LOOP, run_one
from peers.problem import TORCH_DTYPE, Problem, load_presets
from peers.torch_layers import grouped_mm_available, hf_block

SWEEP_TOKENS = (1, 8, 32, 64, 128, 256, 1024, 4096, 16384)
CPU_TOKENS = (1, 8, 32)
DEFAULT_PRESETS = ("mixtral-8x7b", "qwen3-30b-a3b", "deepseek-v3")


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------
def fmt_us(v):
    """A time in us for the table, '-' when absent."""
    return "-" if v is None else (f"{v:.1f}" if v < 1000 else f"{v:.0f}")


def fmt_ratio(v, spec):
    """A ratio for the table, '-' when absent."""
    return "-" if v is None else format(v, spec)


def print_row(row, first):
    """Prints one table line (and the header before the first); transformers columns last."""
    hf = "transformers" in row["check"]["rel_err"]
    if first:
        print(
            f"{'preset':<14} {'T':>6} {'libmoe us':>10} {'grouped us':>11} {'loop us':>10} "
            f"{'x grouped':>9} {'x loop':>7} {'targets':>9}  {'ties':>5} {'err grouped':>11} "
            f"{'err loop':>9} check" + ("   hf us  x hf   err hf" if hf else "")
        )
    c = row["check"]
    err = c["rel_err"]
    us = row.get("us", {})
    sg, sl = row.get("speedup_vs_grouped_mm"), row.get("speedup_vs_loop")
    targets = (
        "-"
        if "us" not in row
        else (
            ("yes" if row["target_grouped_mm_met"] else "no")
            + "/"
            + ("yes" if row["target_loop_met"] else "no")
        )
    )
    print(
        f"{row['preset']:<14} {row['T']:>6} {fmt_us(us.get('libmoe')):>10} "
        f"{fmt_us(us.get('grouped_mm')):>11} {fmt_us(us.get('loop')):>10} "
        f"{'-' if sg is None else f'{sg:.2f}':>9} {'-' if sl is None else f'{sl:.1f}':>7} "
        f"{targets:>9}  {c['tie_fraction']:>5.3f} "
        f"{'-' if 'grouped_mm' not in err else format(err['grouped_mm'], '.2e'):>11} "
        f"{err['loop']:>9.2e} {'PASS' if c['ok'] else 'FAIL'}"
        + (
            f" {fmt_us(us.get('transformers')):>8} "
            f"{fmt_ratio(row.get('speedup_vs_transformers'), '.1f'):>5} "
            f"{err['transformers']:>8.2e}"
            if hf
            else ""
        ),
        flush=True,
    )


def libmoe_commit(script_dir):
    """MOE_BENCH_COMMIT, else `git rev-parse --short HEAD` of the script's tree, else unknown."""
    if os.environ.get("MOE_BENCH_COMMIT"):
        return os.environ["MOE_BENCH_COMMIT"]
    try:
        return subprocess.run(
            ["git", "-C", script_dir, "rev-parse", "--short", "HEAD"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_json(path, env, rows):
    """Writes the environment and every row so far (called after each row: a cut run keeps them)."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"environment": env, "rows": rows}, f, indent=1)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def parse_args(argv):
    """The command line."""
    ap = argparse.ArgumentParser(
        prog="compare_torch.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__,
        epilog=(
            "Targets (GPU, bf16, full size): libmoe >= %.1fx grouped_mm and >= %.0fx the loop at\n"
            "every T. Check: relative Frobenius error of each peer against libmoe over the tokens\n"
            "whose expert set equals libmoe's (moeLayerRoute), <= --tol; at most %.0f%% of tokens\n"
            "may route differently (near-ties).\n\n"
            "Examples:\n"
            "  python3 bench/compare_torch.py                       # GPU: the issue's sweep\n"
            "  python3 bench/compare_torch.py --scale 16 -t 1,8,32  # CPU smoke test\n"
            "  python3 bench/compare_torch.py -p qwen3-30b-a3b -t 1,64 --json out.json\n"
            "\nExit status: 0 every check passed, 1 a check failed or a setup or libmoe call\n"
            "failed, 2 bad usage.\n" % (TARGET_VS_GROUPED, TARGET_VS_LOOP, 100 * MAX_TIE_FRACTION)
        ),
    )
    ap.add_argument(
        "-p",
        "--preset",
        action="append",
        metavar="NAME",
        help="preset of moe-bench --list (repeatable) [%s]" % ", ".join(DEFAULT_PRESETS),
    )
    ap.add_argument(
        "-t",
        "--tokens",
        metavar="T[,T...]",
        help="token counts [GPU: %s; CPU: %s]"
        % (",".join(map(str, SWEEP_TOKENS)), ",".join(map(str, CPU_TOKENS))),
    )
    ap.add_argument(
        "-s",
        "--scale",
        type=int,
        default=None,
        metavar="N",
        help="divide H and I by N, as moe-bench --scale [GPU: 1; CPU: 16]",
    )
    ap.add_argument(
        "-d",
        "--dtype",
        choices=sorted(MOE_DTYPE),
        default="bf16",
        help="storage dtype of weights, x and y [bf16]",
    )
    ap.add_argument(
        "-b",
        "--backend",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto = cuda when torch sees a GPU [auto]",
    )
    ap.add_argument(
        "--lib", metavar="PATH", help="libmoe.so, or a build directory holding it [build/libmoe.so]"
    )
    ap.add_argument(
        "--moe-bench",
        metavar="PATH",
        help="moe-bench, for the preset table [<build>/bench/moe-bench]",
    )
    ap.add_argument(
        "-n",
        "--iters",
        type=int,
        default=100,
        help="timed calls per implementation and T, at most [100]",
    )
    ap.add_argument(
        "--max-time",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds of timed calls per implementation and T that cut --iters "
        "(at least 5 calls) [1.0]",
    )
    ap.add_argument(
        "-w", "--warmup", type=int, default=None, help="untimed calls first [GPU: 5; CPU: 1]"
    )
    ap.add_argument("--seed", type=int, default=1234, help="seed of weights and inputs [1234]")
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for libmoe and torch, 0 = their defaults [0]",
    )
    ap.add_argument(
        "--tol",
        type=float,
        default=None,
        help="relative Frobenius tolerance [bf16/f16: 1e-2; f32: 1e-4]",
    )
    ap.add_argument(
        "--upload",
        choices=("auto", "stacked", "per-expert"),
        default="auto",
        help="how weights go to libmoe: moeLayerSetExpertWeightsStacked or one "
        "expert at a time [auto: stacked up to 2 GiB]",
    )
    ap.add_argument(
        "--peer-router",
        choices=("fp32", "storage"),
        default="fp32",
        help="router the grouped_mm and loop peers are TIMED with: fp32 weights and "
        "math, as libmoe routes, or an nn.Linear in the storage dtype, as a "
        "bf16 model holds it (cheaper logits). The check always routes the "
        "peers in fp32 [fp32]",
    )
    ap.add_argument("--no-grouped-mm", action="store_true", help="skip the grouped_mm peer")
    ap.add_argument(
        "--transformers",
        action="store_true",
        help="also run the actual transformers block of each model (its router in "
        "fp32, its experts class in eager mode) as a 4th peer, when "
        "transformers can be imported; timed eagerly",
    )
    ap.add_argument("--no-timing", action="store_true", help="agreement checks only")
    ap.add_argument(
        "--deadline",
        type=float,
        default=0,
        metavar="S",
        help="start no new (preset, T) after S seconds; 0 = none [0]",
    )
    ap.add_argument("--json", metavar="FILE", help="write the environment and every row as JSON")
    args = ap.parse_args(argv)
    if args.tokens:
        try:
            args.tokens = [int(t) for t in args.tokens.split(",")]
        except ValueError:
            ap.error(f"--tokens: integers separated by commas, got {args.tokens!r}")
        if any(t < 1 for t in args.tokens):
            ap.error("--tokens: every T must be >= 1")
    if args.scale is not None and args.scale < 1:
        ap.error("--scale must be >= 1")
    if args.iters < 1 or args.max_time <= 0 or (args.warmup is not None and args.warmup < 0):
        ap.error("--iters >= 1, --max-time > 0 and --warmup >= 0")
    return args


def find_lib(args, root):
    """Paths of libmoe.so and moe-bench from --lib / --moe-bench or the default build dir."""
    lib = args.lib or os.path.join(root, "build")
    if os.path.isdir(lib):
        build = lib
        lib = os.path.join(lib, "libmoe.so")
    else:
        build = os.path.dirname(lib)
    bench = args.moe_bench or os.path.join(build, "bench", "moe-bench")
    for path, what in ((lib, "libmoe.so"), (bench, "moe-bench")):
        if not os.path.exists(path):
            raise SystemExit(
                f"compare_torch: {what} not found at {path} (build first: cmake -S . "
                "-B build -G Ninja && cmake --build build; or give --lib / --moe-bench)"
            )
    return lib, bench


def main(argv=None):
    """Runs the comparison; returns the exit status."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    lib_path, bench_path = find_lib(args, root)
    lib = load_libmoe(lib_path)
    check_abi(lib)

    cuda = args.backend == "cuda" or (args.backend == "auto" and torch.cuda.is_available())
    if cuda:
        count = ctypes.c_int()
        check(lib, lib.moeGetCudaDeviceCount(ctypes.byref(count)), "moeGetCudaDeviceCount")
        if not torch.cuda.is_available() or count.value == 0:
            raise SystemExit(
                "compare_torch: --backend cuda needs a GPU that torch sees and a "
                f"CUDA build of libmoe ({lib_path} sees {count.value} devices)"
            )
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    scale = args.scale if args.scale is not None else (1 if cuda else 16)
    tokens = args.tokens or list(SWEEP_TOKENS if cuda else CPU_TOKENS)
    if args.warmup is None:
        args.warmup = 5 if cuda else 1
    if args.tol is None:
        args.tol = 1e-4 if args.dtype == "f32" else 1e-2

    presets = load_presets(bench_path)
    names = args.preset or list(DEFAULT_PRESETS)
    for n in names:
        if n not in presets:
            raise SystemExit(
                f"compare_torch: unknown preset {n!r} (moe-bench --list: " f"{', '.join(presets)})"
            )
    gmm = {"enabled": not args.no_grouped_mm, "native": False, "label": "skipped (--no-grouped-mm)"}
    if gmm["enabled"]:
        gmm["native"], gmm["label"] = grouped_mm_available(device, TORCH_DTYPE[args.dtype])
        if not gmm["native"]:
            gmm["label"] += "; FALLBACK: a per-group torch.mm loop stands in for it"

    version = lib.moeGetVersion()
    env = {
        "device": (
            torch.cuda.get_device_name(device)
            if cuda
            else (platform.processor() or platform.machine()) + " (CPU)"
        ),
        "backend": "cuda" if cuda else "cpu",
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "libmoe": f"{version // 10000}.{version // 100 % 100}.{version % 100}",
        "libmoe_commit": libmoe_commit(root),
        "libmoe_path": lib_path,
        "dtype": args.dtype,
        "scale": scale,
        "grouped_mm": gmm["label"],
        "timing": (
            (
                "CUDA graphs (one per rotating input buffer) timed with torch.cuda.Event, "
                "median; the loop eagerly (data-dependent, not capturable)"
            )
            if cuda
            else "CPU wall-clock, median; no graphs: the ratios are not the GPU targets"
        ),
        "router": (
            "fp32 logits in every implementation (libmoe stores the router in fp32)"
            if args.peer_router == "fp32"
            else "peers timed with a storage-dtype nn.Linear router (checked with fp32); "
            "libmoe and --transformers: fp32"
        ),
        "shared_experts": "none (routed part only)",
        "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    print(
        f"device: {env['device']}; torch {env['torch']}; libmoe {env['libmoe']} "
        f"(commit {env['libmoe_commit']}); {args.dtype}; scale 1/{scale}"
    )
    print(f"grouped_mm peer: {gmm['label']}")
    print(f"timing: {env['timing']}")

    start = time.monotonic()
    rows, failures, first = [], 0, True
    for name in names:
        pre = presets[name]
        if args.deadline and time.monotonic() - start > args.deadline:
            print(f"{name}: not run (--deadline {args.deadline:g} s spent)")
            continue
        p = Problem(pre, scale, args.dtype, device, args.seed, args.upload, args.peer_router)
        layer = LibmoeLayer(lib, p, "cuda" if cuda else "cpu", args.threads)
        hf = None
        if args.transformers:
            hf, label = hf_block(p)
            env.setdefault("transformers_peer", {})[name] = label
            print(f"{name}: transformers peer: {label}" + ("" if hf else "; skipped"))
        print(
            f"{name}: H={p.hidden} I={p.intermediate} E={pre['num_experts']} k={pre['top_k']} "
            f"routing {pre['section']} {pre['routing_name']}"
            + (f" groups {pre['n_group']}/{pre['topk_group']}" if pre["n_group"] > 1 else "")
            + (
                f" scaling {pre['routed_scaling_factor']:g}"
                if pre["routed_scaling_factor"] != 1
                else ""
            )
            + (
                f"; shared experts of the model ({pre['num_shared']}) left out"
                if pre["num_shared"]
                else ""
            )
            + f"; weights uploaded {layer.upload_mode}",
            flush=True,
        )
        try:
            for t in tokens:
                if args.deadline and time.monotonic() - start > args.deadline:
                    print(f"{name} T={t}: not run (--deadline {args.deadline:g} s spent)")
                    continue
                try:
                    row = run_one(layer, p, t, args, gmm, hf, cuda)
                except (MoeError, RuntimeError) as exc:  # e.g. out of memory: the next T may fit
                    msg = str(exc).splitlines()[0][:300]
                    print(f"{name} T={t}: FAILED: {msg}", flush=True)
                    rows.append({"preset": name, "T": t, "error": msg})
                    failures += 1
                    if args.json:
                        write_json(args.json, env, rows)
                    if cuda:
                        torch.cuda.synchronize()
                        torch.cuda.empty_cache()
                    continue
                failures += not row["check"]["ok"]
                print_row(row, first)
                first = False
                rows.append(row)
                if args.json:
                    write_json(args.json, env, rows)
        finally:
            layer.close()
            p.release()
            if cuda:
                torch.cuda.empty_cache()
    timed = [r for r in rows if "us" in r]
    errors = sum("error" in r for r in rows)
    if timed:
        met = sum(r["target_grouped_mm_met"] and r["target_loop_met"] for r in timed)
        print(
            f"\ntargets (>= {TARGET_VS_GROUPED}x grouped_mm and >= {TARGET_VS_LOOP:g}x loop) met "
            f"at {met} of {len(timed)} (preset, T)"
            + ("" if cuda else " [CPU run: not the GPU targets]")
        )
    print(
        f"check: {len(rows) - failures} of {len(rows)} passed (tol {args.tol:g})"
        + (f"; {errors} failed to run" if errors else "")
    )
    if args.json:
        write_json(args.json, env, rows)
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MoeError as err:
        print(f"compare_torch: libmoe: {err}", file=sys.stderr)
        sys.exit(1)
