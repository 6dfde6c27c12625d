"""The problem both sides run: the preset table and one preset's seeded weights and inputs."""

import json
import math
import subprocess

import torch

from .libmoe_ctypes import (
    ACTIVATION_SWIGLU,
    ROUTING_SIGMOID_GROUP_TOPK,
    ROUTING_SOFTMAX_GROUP_TOPK,
    ROUTING_SOFTMAX_TOPK,
    ROUTING_TOPK_SOFTMAX,
)

TORCH_DTYPE = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


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
