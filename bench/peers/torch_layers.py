"""The torch peers, all on the weights of a Problem.

torch_route (docs/ROUTING.md in fp32), loop_forward (the per-expert loop of the transformers
blocks), grouped_forward (a layer on torch._grouped_mm, with a per-group mm fallback) and
hf_block (the actual transformers block of the preset's model).
"""

import torch
import torch.nn.functional as F

from .libmoe_ctypes import (
    ROUTING_SIGMOID_GROUP_TOPK,
    ROUTING_SOFTMAX_TOPK,
    ROUTING_TOPK_SOFTMAX,
)


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
