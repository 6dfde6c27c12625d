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
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

SWEEP_TOKENS = (1, 8, 32, 64, 128, 256, 1024, 4096, 16384)
CPU_TOKENS = (1, 8, 32)
DEFAULT_PRESETS = ("mixtral-8x7b", "qwen3-30b-a3b", "deepseek-v3")
TARGET_VS_GROUPED = 1.3
TARGET_VS_LOOP = 10.0
WORKSPACE_ALIGN = 256
STACKED_UPLOAD_MAX_BYTES = 2 << 30  # above this, weights go to libmoe one expert at a time
MAX_TIE_FRACTION = 0.01  # tokens whose expert set may differ from libmoe's (near-ties)

# moe.h enumerations (values as declared there).
MOE_SUCCESS = 0
MOE_ERROR_INVALID_CONFIG = 2
MOE_BACKEND = {"cpu": 1, "cuda": 2}
MOE_DTYPE = {"f32": 0, "f16": 1, "bf16": 2}
TORCH_DTYPE = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
ROUTING_TOPK_SOFTMAX = 0
ROUTING_SOFTMAX_TOPK = 1
ROUTING_SIGMOID_GROUP_TOPK = 2
ROUTING_SOFTMAX_GROUP_TOPK = 3
ACTIVATION_SWIGLU = 0
DROP_BY_PROBS = 1


# ---------------------------------------------------------------------------------------------
# libmoe through ctypes: the structs exactly as include/moe/moe.h lays them out
# ---------------------------------------------------------------------------------------------
class MoeAllocator(ctypes.Structure):
    """moeAllocator_t: alloc, free callbacks and user pointer (all NULL here)."""

    _fields_ = [("alloc", ctypes.c_void_p), ("free", ctypes.c_void_p), ("user", ctypes.c_void_p)]


class MoeContextConfig(ctypes.Structure):
    """moeContextConfig_t (enums are int-sized on the platforms libmoe builds for)."""

    _fields_ = [
        ("size", ctypes.c_size_t),
        ("backend", ctypes.c_int),
        ("device", ctypes.c_int),
        ("stream", ctypes.c_void_p),
        ("allocator", MoeAllocator),
        ("num_threads", ctypes.c_int),
    ]


class MoeLayerConfig(ctypes.Structure):
    """moeLayerConfig_t, field for field."""

    _fields_ = [
        ("size", ctypes.c_size_t),
        ("hidden", ctypes.c_int64),
        ("intermediate", ctypes.c_int64),
        ("num_experts", ctypes.c_int32),
        ("top_k", ctypes.c_int32),
        ("routing", ctypes.c_int),
        ("norm_topk_prob", ctypes.c_int32),
        ("n_group", ctypes.c_int32),
        ("topk_group", ctypes.c_int32),
        ("routed_scaling_factor", ctypes.c_float),
        ("top_p_threshold", ctypes.c_float),
        ("capacity_factor", ctypes.c_float),
        ("drop_policy", ctypes.c_int),
        ("num_heads", ctypes.c_int32),
        ("activation", ctypes.c_int),
        ("swiglu_alpha", ctypes.c_float),
        ("swiglu_limit", ctypes.c_float),
        ("expert_bias", ctypes.c_int32),
        ("dtype", ctypes.c_int),
        ("num_shared_experts", ctypes.c_int32),
        ("shared_intermediate", ctypes.c_int64),
    ]


class PaddedContextConfig(ctypes.Structure):
    """A context config followed by 8 spare bytes, for the size probe of check_abi."""

    _fields_ = [("cfg", MoeContextConfig), ("pad", ctypes.c_uint64)]


class PaddedLayerConfig(ctypes.Structure):
    """A layer config followed by 8 spare bytes, for the size probe and the round trip."""

    _fields_ = [("cfg", MoeLayerConfig), ("pad", ctypes.c_uint64)]


def context_config_init():
    """Returns a MoeContextConfig with the defaults of MOE_CONTEXT_CONFIG_INIT."""
    return MoeContextConfig(
        ctypes.sizeof(MoeContextConfig), 0, -1, None, MoeAllocator(None, None, None), 0
    )


def layer_config_init():
    """Returns a MoeLayerConfig with the defaults of MOE_LAYER_CONFIG_INIT."""
    return MoeLayerConfig(
        ctypes.sizeof(MoeLayerConfig),
        0,
        0,
        0,
        0,
        ROUTING_TOPK_SOFTMAX,
        0,
        1,
        1,
        1.0,
        0.4,
        0.0,
        0,
        1,
        ACTIVATION_SWIGLU,
        1.702,
        7.0,
        0,
        MOE_DTYPE["bf16"],
        0,
        0,
    )


def load_libmoe(path):
    """Loads libmoe.so and declares the prototypes this script calls."""
    lib = ctypes.CDLL(path)
    vp, i64, i32, st = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_int
    protos = {
        "moeGetVersion": (ctypes.c_int, []),
        "moeGetErrorString": (ctypes.c_char_p, [st]),
        "moeGetLastErrorMessage": (ctypes.c_char_p, []),
        "moeGetCudaDeviceCount": (st, [ctypes.POINTER(ctypes.c_int)]),
        "moeContextCreate": (st, [ctypes.POINTER(vp), vp]),
        "moeContextDestroy": (st, [vp]),
        "moeContextGetBackend": (st, [vp, ctypes.POINTER(ctypes.c_int)]),
        "moeContextSynchronize": (st, [vp]),
        "moeLayerConfigValidate": (st, [vp]),
        "moeLayerCreate": (st, [ctypes.POINTER(vp), vp, vp]),
        "moeLayerDestroy": (st, [vp]),
        "moeLayerGetConfig": (st, [vp, vp]),
        "moeLayerGetRouteWidth": (st, [vp, ctypes.POINTER(i32)]),
        "moeLayerSetRouterWeights": (st, [vp, vp, vp, st]),
        "moeLayerSetSelectionBias": (st, [vp, vp]),
        "moeLayerSetExpertWeights": (st, [vp, i32, vp, vp, vp, st]),
        "moeLayerSetExpertWeightsStacked": (st, [vp, vp, vp, st]),
        "moeLayerGetWorkspaceSize": (st, [vp, i64, ctypes.POINTER(ctypes.c_size_t)]),
        "moeLayerForward": (st, [vp, i64, vp, vp, vp, vp, ctypes.c_size_t, vp]),
        "moeLayerRoute": (st, [vp, i64, vp, vp, vp, vp, vp, ctypes.c_size_t, vp]),
    }
    for name, (restype, argtypes) in protos.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


class MoeError(RuntimeError):
    """A libmoe call that returned a status other than moeSuccess."""

    def __init__(self, what, status, message):
        super().__init__(f"{what}: {message}")
        self.status = status


def check(lib, status, what):
    """Raises MoeError with moeGetErrorString and moeGetLastErrorMessage unless status is 0."""
    if status != MOE_SUCCESS:
        name = lib.moeGetErrorString(status).decode()
        detail = lib.moeGetLastErrorMessage().decode()
        raise MoeError(what, status, f"{name} ({detail})")


def expect_invalid_config(lib, status, what):
    """Fails loudly unless a probe that must be refused was refused with moeErrorInvalidConfig."""
    if status != MOE_ERROR_INVALID_CONFIG:
        raise SystemExit(
            f"compare_torch: ABI probe '{what}' returned {status}, expected "
            "moeErrorInvalidConfig: the ctypes structs do not match moe.h"
        )


def check_abi(lib):
    """Proves that the ctypes structs have the sizes and layout of the library's.

    libmoe accepts a config whose size is in [a minimum, sizeof] (older callers) and refuses a
    larger one. Our size accepted and our size + 8 refused means the sizes are equal (both are
    multiples of 8). The layer config also makes a round trip through moeLayerGetConfig with
    distinctive values, which catches a field of the wrong width or a misplaced padding; two
    same-typed fields swapped survive a round trip and are caught by the agreement check
    instead. Raises SystemExit or MoeError on a mismatch.
    """
    ours = ctypes.sizeof(MoeLayerConfig)
    cfg = layer_config_init()
    cfg.hidden, cfg.intermediate, cfg.num_experts, cfg.top_k = 16, 24, 4, 2
    cfg.routing, cfg.norm_topk_prob, cfg.n_group, cfg.topk_group = (
        ROUTING_SIGMOID_GROUP_TOPK,
        1,
        2,
        1,
    )
    cfg.routed_scaling_factor, cfg.top_p_threshold, cfg.drop_policy = 2.5, 0.5, DROP_BY_PROBS
    cfg.swiglu_alpha, cfg.swiglu_limit, cfg.dtype = 1.5, 6.0, MOE_DTYPE["f32"]
    cfg.num_shared_experts, cfg.shared_intermediate = 1, 40
    check(lib, lib.moeLayerConfigValidate(ctypes.byref(cfg)), "moeLayerConfigValidate (ABI probe)")
    padded = PaddedLayerConfig(cfg, 0)
    padded.cfg.size = ours + 8
    expect_invalid_config(
        lib, lib.moeLayerConfigValidate(ctypes.byref(padded)), "moeLayerConfig_t.size + 8"
    )

    ccfg = context_config_init()
    ccfg.backend = MOE_BACKEND["cpu"]
    ctx = ctypes.c_void_p()
    pc = PaddedContextConfig(ccfg, 0)
    pc.cfg.size = ctypes.sizeof(MoeContextConfig) + 8
    expect_invalid_config(
        lib,
        lib.moeContextCreate(ctypes.byref(ctx), ctypes.byref(pc)),
        "moeContextConfig_t.size + 8",
    )
    check(
        lib,
        lib.moeContextCreate(ctypes.byref(ctx), ctypes.byref(ccfg)),
        "moeContextCreate (ABI probe)",
    )
    layer = ctypes.c_void_p()
    try:
        check(
            lib,
            lib.moeLayerCreate(ctypes.byref(layer), ctx, ctypes.byref(cfg)),
            "moeLayerCreate (ABI probe)",
        )
        back = PaddedLayerConfig(layer_config_init(), 0xA5A5A5A5A5A5A5A5)
        check(lib, lib.moeLayerGetConfig(layer, ctypes.byref(back)), "moeLayerGetConfig")
        for name, _ in MoeLayerConfig._fields_:
            if getattr(back.cfg, name) != getattr(cfg, name):
                raise SystemExit(
                    f"compare_torch: ABI probe: field {name} came back as "
                    f"{getattr(back.cfg, name)!r}, set {getattr(cfg, name)!r}"
                )
        if back.pad != 0xA5A5A5A5A5A5A5A5:
            raise SystemExit("compare_torch: ABI probe: moeLayerGetConfig wrote past our struct")
    finally:
        lib.moeLayerDestroy(layer)
        lib.moeContextDestroy(ctx)


def aligned_workspace(nbytes, device):
    """Returns (tensor, pointer): a byte tensor holding nbytes at a 256-byte aligned pointer."""
    buf = torch.empty(max(nbytes, 1) + WORKSPACE_ALIGN, dtype=torch.uint8, device=device)
    ptr = buf.data_ptr()
    return buf, ptr + (-ptr) % WORKSPACE_ALIGN


class LibmoeLayer:
    """One libmoe context + layer holding the weights of a Problem."""

    def __init__(self, lib, problem, backend, threads):
        """Creates the context and layer and uploads the problem's weights (host copies)."""
        self.lib, self.p = lib, problem
        self.ctx, self.layer = ctypes.c_void_p(), ctypes.c_void_p()
        ccfg = context_config_init()
        ccfg.backend = MOE_BACKEND[backend]
        ccfg.num_threads = threads
        if backend == "cuda":
            ccfg.device = torch.cuda.current_device()
        check(
            lib,
            lib.moeContextCreate(ctypes.byref(self.ctx), ctypes.byref(ccfg)),
            "moeContextCreate",
        )
        pre = problem.preset
        cfg = layer_config_init()
        cfg.hidden, cfg.intermediate = problem.hidden, problem.intermediate
        cfg.num_experts, cfg.top_k = pre["num_experts"], pre["top_k"]
        cfg.routing, cfg.norm_topk_prob = pre["routing"], pre["norm_topk_prob"]
        cfg.n_group, cfg.topk_group = pre["n_group"], pre["topk_group"]
        cfg.routed_scaling_factor = pre["routed_scaling_factor"]
        cfg.activation = pre["activation"]
        cfg.dtype = MOE_DTYPE[problem.dtype_name]
        # "routed part": no shared experts, whatever the preset has.
        check(
            lib,
            lib.moeLayerCreate(ctypes.byref(self.layer), self.ctx, ctypes.byref(cfg)),
            "moeLayerCreate",
        )
        width = ctypes.c_int32()
        check(
            lib, lib.moeLayerGetRouteWidth(self.layer, ctypes.byref(width)), "moeLayerGetRouteWidth"
        )
        self.route_width = width.value
        self._upload()
        self.ws, self.ws_ptr, self.ws_bytes = None, None, 0

    def _upload(self):
        """Gives the weights to libmoe from host memory: stacked, or one expert at a time."""
        lib, p = self.lib, self.p
        dt = MOE_DTYPE[p.dtype_name]
        router = p.router.float().cpu().contiguous()
        check(
            lib,
            lib.moeLayerSetRouterWeights(self.layer, router.data_ptr(), None, MOE_DTYPE["f32"]),
            "moeLayerSetRouterWeights",
        )
        if p.sel_bias is not None:
            bias = p.sel_bias.float().cpu().contiguous()
            check(
                lib,
                lib.moeLayerSetSelectionBias(self.layer, bias.data_ptr()),
                "moeLayerSetSelectionBias",
            )
        nbytes = (p.gate_up.numel() + p.down.numel()) * p.gate_up.element_size()
        if p.upload == "stacked" or (p.upload == "auto" and nbytes <= STACKED_UPLOAD_MAX_BYTES):
            gu, dn = p.gate_up.cpu().contiguous(), p.down.cpu().contiguous()
            check(
                lib,
                lib.moeLayerSetExpertWeightsStacked(self.layer, gu.data_ptr(), dn.data_ptr(), dt),
                "moeLayerSetExpertWeightsStacked",
            )
            self.upload_mode = "stacked"
            return
        inter = p.intermediate
        for e in range(p.gate_up.shape[0]):
            gate = p.gate_up[e, :inter].cpu().contiguous()
            up = p.gate_up[e, inter:].cpu().contiguous()
            down = p.down[e].cpu().contiguous()
            check(
                lib,
                lib.moeLayerSetExpertWeights(
                    self.layer, e, gate.data_ptr(), up.data_ptr(), down.data_ptr(), dt
                ),
                f"moeLayerSetExpertWeights({e})",
            )
        self.upload_mode = "per-expert"

    def reserve(self, max_tokens):
        """Allocates (once per larger T) the workspace of moeLayerGetWorkspaceSize bytes."""
        need = ctypes.c_size_t()
        check(
            self.lib,
            self.lib.moeLayerGetWorkspaceSize(self.layer, max_tokens, ctypes.byref(need)),
            "moeLayerGetWorkspaceSize",
        )
        if need.value > self.ws_bytes or self.ws is None:
            self.ws = None
            self.ws, self.ws_ptr = aligned_workspace(need.value, self.p.device)
            self.ws_bytes = need.value

    def forward(self, x, y, stream=None):
        """y = MoE(x) on the given stream (a cudaStream_t as an int, or None)."""
        check(
            self.lib,
            self.lib.moeLayerForward(
                self.layer,
                x.shape[0],
                x.data_ptr(),
                y.data_ptr(),
                None,
                self.ws_ptr,
                self.ws_bytes,
                stream,
            ),
            "moeLayerForward",
        )

    def route(self, x, stream=None):
        """libmoe's own routing of x: (expert ids [T, K] int32, weights [T, K] fp32)."""
        t = x.shape[0]
        ids = torch.empty(t, self.route_width, dtype=torch.int32, device=x.device)
        w = torch.empty(t, self.route_width, dtype=torch.float32, device=x.device)
        check(
            self.lib,
            self.lib.moeLayerRoute(
                self.layer,
                t,
                x.data_ptr(),
                ids.data_ptr(),
                w.data_ptr(),
                None,
                self.ws_ptr,
                self.ws_bytes,
                stream,
            ),
            "moeLayerRoute",
        )
        return ids, w

    def close(self):
        """Destroys the layer and the context."""
        self.lib.moeLayerDestroy(self.layer)
        self.lib.moeContextDestroy(self.ctx)
        self.ws = None


# ---------------------------------------------------------------------------------------------
# Presets and the problem (weights, inputs)
# ---------------------------------------------------------------------------------------------
def load_presets(moe_bench):
    """The model table from `moe-bench --list --json -` (bench/presets.c), by name."""
    out = subprocess.run(
        [moe_bench, "--list", "--json", "-"], check=True, capture_output=True, text=True
    ).stdout
    return {p["name"]: p for p in json.loads(out)["presets"]}


def scale_dim(dim, scale):
    """bench_scale_dim of bench/presets.c: dim / scale rounded to a multiple of 8, at least 8."""
    if scale <= 1:
        return dim
    d = (dim // scale + 4) // 8 * 8
    return max(d, 8)


class Problem:
    """One preset's layer at a scale: seeded weights in torch tensors on the compute device.

    router [E, H] fp32; sel_bias [E] fp32 or None (DeepSeek-V3's selection bias);
    gate_up [E, 2I, H] (gate half first) and down [E, H, I] in the storage dtype: the
    transformers v5 stacked layout, which libmoe takes as it is.
    """

    def __init__(self, preset, scale, dtype_name, device, seed, upload, peer_router="fp32"):
        """Draws the weights: N(0, 1/fan_in) experts, N(0, 1/H) router, small selection bias."""
        if preset["routing"] not in (
            ROUTING_TOPK_SOFTMAX,
            ROUTING_SOFTMAX_TOPK,
            ROUTING_SIGMOID_GROUP_TOPK,
            ROUTING_SOFTMAX_GROUP_TOPK,
        ):
            raise SystemExit(
                f"compare_torch: preset {preset['name']}: routing "
                f"{preset['routing_name']} is not implemented in the torch peers"
            )
        if (
            preset["activation"] != ACTIVATION_SWIGLU
            or preset["expert_bias"]
            or preset["router_bias"]
        ):
            raise SystemExit(
                f"compare_torch: preset {preset['name']}: only SwiGLU experts "
                "without biases are implemented in the torch peers"
            )
        self.preset, self.scale, self.dtype_name, self.device = preset, scale, dtype_name, device
        self.dtype, self.upload = TORCH_DTYPE[dtype_name], upload
        self.hidden = scale_dim(preset["hidden"], scale)
        self.intermediate = scale_dim(preset["intermediate"], scale)
        e, h, i = preset["num_experts"], self.hidden, self.intermediate
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)
        self.router = torch.randn(e, h, generator=gen, device=device) / math.sqrt(h)
        # The router the torch peers time with: fp32 like libmoe, or in the storage dtype as
        # nn.Linear in a bf16 model holds it (--peer-router storage). route_weight is the one
        # torch_route uses now: run_one checks with the fp32 router and times with this one.
        self.peer_router = self.router if peer_router == "fp32" else self.router.to(self.dtype)
        self.route_weight = self.router
        self.sel_bias = None
        if preset["routing"] == ROUTING_SIGMOID_GROUP_TOPK:
            self.sel_bias = 0.05 * torch.randn(e, generator=gen, device=device)
        self.gate_up = torch.randn(e, 2 * i, h, generator=gen, device=device, dtype=self.dtype)
        self.gate_up.mul_(1.0 / math.sqrt(h))
        self.down = torch.randn(e, h, i, generator=gen, device=device, dtype=self.dtype)
        self.down.mul_(1.0 / math.sqrt(i))
        self.gen = gen

    def inputs(self, tokens, count):
        """count input buffers x [T, H] in the storage dtype, N(0, 1)."""
        return [
            torch.randn(
                tokens, self.hidden, generator=self.gen, device=self.device, dtype=self.dtype
            )
            for _ in range(count)
        ]

    def release(self):
        """Drops the weight tensors."""
        self.router = self.peer_router = self.route_weight = None
        self.sel_bias = self.gate_up = self.down = None


# ---------------------------------------------------------------------------------------------
# The torch peers
# ---------------------------------------------------------------------------------------------
def torch_route(x, p):
    """Routing of docs/ROUTING.md in torch, fp32: (ids [T, K] int64, weights [T, K] fp32).

    1a topk on logits then softmax over the k; 1b softmax then topk, renormalized when
    norm_topk_prob; 2a sigmoid + selection bias, groups scored by their top-2, topk_group kept
    (others -inf), weights from the unbiased scores, renormalized (+1e-20) and scaled; 2b softmax,
    groups scored by their max. Every family multiplies by routed_scaling_factor. The logits are
    x @ W^T in fp32 with p.route_weight fp32, else its storage-dtype linear made fp32.
    """
    pre = p.preset
    k, e = pre["top_k"], pre["num_experts"]
    if p.route_weight.dtype == torch.float32:
        logits = x.float() @ p.route_weight.t()
    else:
        logits = F.linear(x, p.route_weight).float()
    fam = pre["routing"]
    if fam == ROUTING_TOPK_SOFTMAX:
        top, ids = torch.topk(logits, k, dim=-1)
        w = torch.softmax(top, dim=-1)
    elif fam == ROUTING_SOFTMAX_TOPK:
        w, ids = torch.topk(torch.softmax(logits, dim=-1), k, dim=-1)
        if pre["norm_topk_prob"]:
            w = w / w.sum(dim=-1, keepdim=True)
    else:
        scores = (
            torch.sigmoid(logits)
            if fam == ROUTING_SIGMOID_GROUP_TOPK
            else torch.softmax(logits, -1)
        )
        sel = scores + p.sel_bias if p.sel_bias is not None else scores
        groups = sel.view(x.shape[0], pre["n_group"], e // pre["n_group"])
        if fam == ROUTING_SIGMOID_GROUP_TOPK:
            gscore = groups.topk(2, dim=-1).values.sum(dim=-1)
        else:
            gscore = groups.max(dim=-1).values
        keep = torch.topk(gscore, pre["topk_group"], dim=-1).indices
        gmask = torch.zeros_like(gscore, dtype=torch.bool).scatter_(1, keep, True)
        masked = groups.masked_fill(~gmask.unsqueeze(-1), float("-inf")).view(x.shape[0], e)
        ids = torch.topk(masked, k, dim=-1).indices
        w = scores.gather(1, ids)
        if pre["norm_topk_prob"]:
            w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
    return ids, w * pre["routed_scaling_factor"]


def loop_forward(x, p):
    """The per-expert loop of the transformers MoE blocks, from their definition.

    Routing weights cast to the storage dtype, each expert's tokens gathered with torch.where on
    a one-hot mask, act(gate) * up -> down in the storage dtype, scaled, index_add_ into a
    storage-dtype output (as those blocks accumulate). Data-dependent: not capturable.
    """
    ids, w = torch_route(x, p)
    w = w.to(x.dtype)
    inter, e_count = p.intermediate, p.preset["num_experts"]
    y = torch.zeros_like(x)
    mask = F.one_hot(ids, num_classes=e_count).permute(2, 1, 0)  # [E, K, T]
    hit = torch.greater(mask.sum(dim=(-1, -2)), 0).nonzero().flatten().tolist()
    for e in hit:
        slot, tok = torch.where(mask[e])
        cur = x[tok]
        gu = F.linear(cur, p.gate_up[e])
        h = F.silu(gu[:, :inter]) * gu[:, inter:]
        out = F.linear(h, p.down[e]) * w[tok, slot, None]
        y.index_add_(0, tok, out.to(x.dtype))
    return y


def grouped_mm_available(device, dtype):
    """Whether torch._grouped_mm runs here for this dtype (tried on a tiny problem)."""
    if not hasattr(torch, "_grouped_mm"):
        return False, "torch has no _grouped_mm"
    try:
        a = torch.randn(4, 16, device=device, dtype=dtype)
        b = torch.randn(2, 16, 16, device=device, dtype=dtype).transpose(-2, -1)
        torch._grouped_mm(a, b, offs=torch.tensor([2, 4], dtype=torch.int32, device=device))
        return True, "torch._grouped_mm"
    except (RuntimeError, NotImplementedError) as exc:
        return False, f"torch._grouped_mm unavailable ({str(exc).splitlines()[0][:120]})"


def per_group_mm(a, b, offs):
    """Fallback for _grouped_mm(a [M, K], b [G, K, N], offs): a loop of mm (host-synchronizing)."""
    out = a.new_empty(a.shape[0], b.shape[-1])
    start = 0
    for g, end in enumerate(offs.tolist()):
        if end > start:
            out[start:end] = a[start:end] @ b[g]
        start = end
    return out


def grouped_forward(x, p, use_grouped_mm):
    """A layer built on torch._grouped_mm (capturable: no host synchronization).

    Selections argsorted by expert (stable), offsets by searchsorted (int32 ends), x gathered
    into expert order, gate_up = _grouped_mm(x_sorted, W_gate_up^T [E, H, 2I]) (a transposed
    view of the stacked weights, the column-major operand the op expects), SwiGLU, down =
    _grouped_mm(h, W_down^T [E, I, H]), rows put back in (token, slot) order and combined with
    the routing weights by one batched matmul [T, 1, K] x [T, K, H] (fp32 accumulate).
    """
    ids, w = torch_route(x, p)
    t, k = ids.shape
    e_count, inter = p.preset["num_experts"], p.intermediate
    flat = ids.flatten()
    order = torch.argsort(flat, stable=True)
    offs = torch.searchsorted(
        flat[order],
        torch.arange(e_count, device=x.device, dtype=flat.dtype),
        right=True,
        out_int32=True,
    )
    xs = x.index_select(0, order // k)
    mm = torch._grouped_mm if use_grouped_mm else per_group_mm
    gu = (
        mm(xs, p.gate_up.transpose(-2, -1), offs=offs)
        if use_grouped_mm
        else mm(xs, p.gate_up.transpose(-2, -1), offs)
    )
    h = F.silu(gu[:, :inter]) * gu[:, inter:]
    out = (
        mm(h, p.down.transpose(-2, -1), offs=offs)
        if use_grouped_mm
        else mm(h, p.down.transpose(-2, -1), offs)
    )
    pairs = torch.empty_like(out).index_copy_(0, order, out)
    return torch.bmm(w.to(x.dtype).unsqueeze(1), pairs.view(t, k, -1)).squeeze(1)


def hf_block(p):
    """The actual transformers MoE block of the preset's model holding the problem's weights.

    Returns (forward, label) or (None, reason). forward(x) runs the block's own router (its
    module moved to fp32 and fed fp32 tokens, as libmoe routes) and its own experts class in
    "eager" mode (the per-expert loop) and returns (y, ids); the routed part only (DeepSeek-V3's
    shared expert is not called). Optional: transformers may be missing or differ in version.
    """
    try:
        import transformers  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None, "transformers is not installed"
    pre = p.preset
    e, k, h, i = pre["num_experts"], pre["top_k"], p.hidden, p.intermediate
    try:
        if pre["name"].startswith("mixtral"):
            from transformers.models.mixtral import (
                modeling_mixtral as mod,
            )  # pylint: disable=import-outside-toplevel

            cfg = transformers.MixtralConfig(
                hidden_size=h, intermediate_size=i, num_local_experts=e, num_experts_per_tok=k
            )
            block_class = mod.MixtralSparseMoeBlock
        elif pre["name"].startswith("qwen3"):
            from transformers.models.qwen3_moe import (
                modeling_qwen3_moe as mod,
            )  # pylint: disable=import-outside-toplevel

            cfg = transformers.Qwen3MoeConfig(
                hidden_size=h,
                moe_intermediate_size=i,
                num_experts=e,
                num_experts_per_tok=k,
                norm_topk_prob=bool(pre["norm_topk_prob"]),
            )
            block_class = mod.Qwen3MoeSparseMoeBlock
        elif pre["name"] == "deepseek-v3":
            from transformers.models.deepseek_v3 import (
                modeling_deepseek_v3 as mod,
            )  # pylint: disable=import-outside-toplevel

            cfg = transformers.DeepseekV3Config(
                hidden_size=h,
                moe_intermediate_size=i,
                n_routed_experts=e,
                num_experts_per_tok=k,
                n_group=pre["n_group"],
                topk_group=pre["topk_group"],
                n_shared_experts=1,
                routed_scaling_factor=pre["routed_scaling_factor"],
                norm_topk_prob=bool(pre["norm_topk_prob"]),
            )
            block_class = mod.DeepseekV3MoE
        else:
            return None, f"no transformers block mapped for preset {pre['name']}"
        cfg._experts_implementation = "eager"  # pylint: disable=protected-access
        # Built on the meta device (no full-size fp32 host tensors), then given the real ones.
        with torch.device("meta"):
            block = block_class(cfg)
        block.experts.config._experts_implementation = "eager"  # pylint: disable=protected-access
        with torch.no_grad():
            block.gate.weight = torch.nn.Parameter(p.router.float().clone(), requires_grad=False)
            if p.sel_bias is not None:
                block.gate.e_score_correction_bias = p.sel_bias.float().clone()
            block.experts.gate_up_proj = torch.nn.Parameter(p.gate_up, requires_grad=False)
            block.experts.down_proj = torch.nn.Parameter(p.down, requires_grad=False)
        gate, experts = block.gate.to(p.device), block.experts
    except Exception as exc:  # pylint: disable=broad-except
        return None, f"transformers {transformers.__version__}: block not built ({exc})"

    def forward(x):
        """The block's router (fp32) and experts (eager loop) on x [T, H]."""
        with torch.no_grad():
            _, w, ids = gate(x.float())
            return experts(x, ids, w), ids

    return (
        forward,
        f"transformers {transformers.__version__} {type(block).__name__} (eager experts)",
    )


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
