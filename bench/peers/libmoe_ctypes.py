"""libmoe through ctypes: the C API of include/moe/moe.h as compare_torch.py calls it.

The moe.h enumerations, the config structs laid out field for field, load_libmoe (the
prototypes), check / MoeError (status handling), check_abi (proof that the structs match the
library's) and LibmoeLayer: one context + layer holding a Problem's weights, with forward and
route on torch tensors' memory.
"""

import ctypes

import torch

WORKSPACE_ALIGN = 256
STACKED_UPLOAD_MAX_BYTES = 2 << 30  # above this, weights go to libmoe one expert at a time

# moe.h enumerations (values as declared there).
MOE_SUCCESS = 0
MOE_ERROR_INVALID_CONFIG = 2
MOE_BACKEND = {"cpu": 1, "cuda": 2}
MOE_DTYPE = {"f32": 0, "f16": 1, "bf16": 2}
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
