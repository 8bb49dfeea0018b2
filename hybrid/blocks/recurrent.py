"""The CARVE layer and its GDN-2 baseline (one class, ``kind`` picks the write gate and the content term).

x -> q, k, v projections -> causal short conv + SiLU -> L2-norm(q), L2-norm(k)   (hybrid.ops.short_conv)
g = -exp(A_log) * softplus(f_proj(x) + dt_bias)    (fp32, per key channel; f_proj low rank; hybrid.ops.gates)
a = b_proj(x)                                      (erase logits, d -> H*K)
w = sigmoid(w_proj(x))                             (CARVE: d -> H, one scalar per head; GDN-2: d -> H*V)
o = carve(q, k, v, g, a, w, U_down, U_up)          (hybrid.ops.carve; U only for CARVE with content on)
y = o_proj(RMSNorm_head(o) * SiLU(out_gate(x)))    (out_gate low rank d -> R -> H*V; hybrid.ops.gated_norm)

On CUDA the ops around the operator are fused Triton kernels that keep only their low-precision inputs
for the backward, and every projection of x but ``b_proj`` runs as one GEMM; elsewhere they are PyTorch.

Padded batches (``valid`` has False entries): the real tokens of every row are packed into one
sequence per row and run with ``cu_seqlens``; pads never touch the convolution state, the recurrent
state, or its chunk position/mean, so a left-padded row equals the same row run alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hybrid.ops.backend import use_triton
from hybrid.ops.carve import CarveState, carve, carve_decode
from hybrid.ops.gates import gates
from hybrid.ops.short_conv import conv_qkv, conv_qkv_step

from . import init
from .cache import RecurrentCacheLayer
from .norms import GatedHeadRMSNorm
from .recurrent_step import recurrent_step
from .static_cache import StaticRecurrentLayer

# torch.compile (train.compile) compiles everything around the operator; the operator itself is our
# own autograd Function over Triton kernels (or the chunked torch loop on CPU) and stays eager
_carve = torch.compiler.disable(carve)
_carve_decode = torch.compiler.disable(carve_decode)
# the fused ops around it likewise (autograd Functions over Triton kernels; PyTorch on CPU)
conv_qkv = torch.compiler.disable(conv_qkv)
conv_qkv_step = torch.compiler.disable(conv_qkv_step)
gates = torch.compiler.disable(gates)


class RecurrentMixer(nn.Module):
    """CARVE (``kind='carve'``) or GDN-2 (``kind='gdn2'``) token mixer for a normalised block dict."""

    def __init__(self, block: dict, d_model: int, norm_eps: float = 1e-6):
        super().__init__()
        self.kind = block["kind"]
        self.H, self.K, self.V = block["heads"], block["head_dim"], block["value_dim"]
        self.chunk_size = block["chunk_size"]
        self.conv_size = block["conv_size"]
        R = block["gate_rank"]
        H, K, V = self.H, self.K, self.V
        self.content = self.kind == "carve" and block["content"] == "self"
        self.content_grad = block.get("content_grad", "full")
        self.operator_backend = "auto"
        # the ops around the operator (hybrid.ops): "auto" = Triton kernels on CUDA, PyTorch elsewhere
        self.ops_backend = "auto"

        self.q_proj = nn.Linear(d_model, H * K, bias=False)
        self.k_proj = nn.Linear(d_model, H * K, bias=False)
        self.v_proj = nn.Linear(d_model, H * V, bias=False)
        self.conv_weight = nn.Parameter(torch.empty(2 * H * K + H * V, self.conv_size))
        self.f_proj = nn.Sequential(nn.Linear(d_model, R, bias=False), nn.Linear(R, H * K, bias=False))
        self.A_log = nn.Parameter(torch.empty(H))
        self.dt_bias = nn.Parameter(torch.empty(H * K))
        self.b_proj = nn.Linear(d_model, H * K, bias=False)
        self.w_proj = nn.Linear(d_model, H if self.kind == "carve" else H * V, bias=False)
        if self.content:
            r = block["content_rank"]
            self.u_down = nn.Parameter(torch.empty(H, r, V))
            self.u_up = nn.Parameter(torch.empty(H, K, r))
        self.g_proj = nn.Sequential(nn.Linear(d_model, R, bias=False), nn.Linear(R, H * V, bias=False))
        self.o_norm = GatedHeadRMSNorm(V, eps=norm_eps)
        self.o_proj = nn.Linear(H * V, d_model, bias=False)
        self.reset_parameters()

    # ------------------------------------------------------------------------------------------ init
    def linear_layers(self) -> list[nn.Linear]:
        return [m for m in self.modules() if isinstance(m, nn.Linear)]

    @torch.no_grad()
    def reset_parameters(self, n_layers: int = 1):
        """GDN-2 style init: Xavier-uniform (gain 2^-2.5) linears, o_proj also scaled by 1/sqrt(2 n_layers);
        A_log ~ log U(1, 16); dt_bias = softplus^-1(dt), dt log-uniform in [1e-3, 0.1]; U_up = 0."""
        gain = 2 ** -2.5
        for lin in self.linear_layers():
            g = gain / math.sqrt(2 * n_layers) if lin is self.o_proj else gain
            init.xavier_uniform_(lin.weight, gain=g)
        bound = 1.0 / math.sqrt(self.conv_size)
        init.uniform_(self.conv_weight, -bound, bound)
        init.copy_(self.A_log, torch.empty(self.H).uniform_(1, 16).log())
        dt = torch.exp(torch.empty(self.H * self.K).uniform_(math.log(1e-3), math.log(0.1)))
        inv = dt + torch.log(-torch.expm1(-dt))
        init.copy_(self.dt_bias, inv)
        if self.content:
            init.normal_(self.u_down, mean=0.0, std=self.V ** -0.5)
            init.zeros_(self.u_up)
        init.ones_(self.o_norm.weight)

    # --------------------------------------------------------------------------------------- forward
    def gates(self, x: torch.Tensor):
        """g (fp32, <= 0), a, w for inputs ``x [B, T, d]``."""
        B, T, _ = x.shape
        H, K = self.H, self.K
        g, w = gates(self.f_proj(x).view(B, T, H, K), self.dt_bias, self.A_log, self.w_proj_logits(x),
                     backend=self.ops_backend)
        return g, self.b_proj(x).view(B, T, H, K), w

    def w_proj_logits(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        w = self.w_proj(x)
        return w.view(B, T, self.H) if self.kind == "carve" else w.view(B, T, self.H, self.V)

    def _projections(self, x):
        """qkv [B, T, 2HK + HV], decay logits f [B, T, H, K], erase logits a, write logits, output gate.

        With the fused ops every projection of x but the erase logits is one GEMM (its output slices feed
        the kernels, which read strided rows); a is its own GEMM because the operator keeps it contiguous."""
        B, T, _ = x.shape
        H, K, V = self.H, self.K, self.V
        a = self.b_proj(x).view(B, T, H, K)
        if not self._fused(x):
            qkv = torch.cat([self.q_proj(x), self.k_proj(x), self.v_proj(x)], dim=-1)
            return qkv, self.f_proj(x).view(B, T, H, K), a, self.w_proj_logits(x), self.g_proj(x)
        f_down, g_down = self.f_proj[0], self.g_proj[0]
        parts = [self.q_proj, self.k_proj, self.v_proj, f_down, self.w_proj, g_down]
        weights = [m.weight for m in parts]
        # zero rows pad z's row to a multiple of 64 elements: the kernels reading its slices as strided rows
        # are specialised by Triton on a row stride divisible by 16, and only then load 16-byte vectors
        pad = -sum(w.shape[0] for w in weights) % 64
        if pad:
            weights.append(weights[0].new_zeros(pad, weights[0].shape[1]))
        z = F.linear(x, torch.cat(weights))
        qkv, fl, wl, gl, _ = torch.split(z, [2 * H * K + H * V, f_down.out_features, self.w_proj.out_features,
                                             g_down.out_features, pad], dim=-1)
        wl = wl.view(B, T, H) if self.kind == "carve" else wl.view(B, T, H, V)
        return qkv, self.f_proj[1](fl).view(B, T, H, K), a, wl, self.g_proj[1](gl)

    def _fused(self, x) -> bool:
        return use_triton(x, self.ops_backend)

    def _core(self, x, *, cu_seqlens=None, conv_state=None, state: CarveState | None = None,
              want_state=False, decode=False):
        """Mix ``x [B, T, d]`` (one sequence per row, or packed with cu_seqlens). Returns y and new states."""
        B, T, _ = x.shape
        H, K, V = self.H, self.K, self.V
        be = self.ops_backend
        qkv, f, a, w_logits, gate = self._projections(x)
        # the operator's dtype is the autocast dtype when autocast is on (the residual stream stays fp32
        # there): bf16 operands select the fast Triton path, fp32 ones its slower fp32 fallback
        dev = x.device.type
        cdt = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
        if decode:  # the convolution state is shifted in place
            new_conv = conv_state if conv_state is not None else qkv.new_zeros(B, qkv.shape[-1], self.conv_size - 1)
            q, k, v = conv_qkv_step(qkv[:, 0], self.conv_weight, new_conv, H, K, V, backend=be)
            q, k, v = q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)
        else:
            q, k, v, new_conv = conv_qkv(qkv, self.conv_weight, H, K, V, cu_seqlens=cu_seqlens,
                                         initial_state=conv_state, output_final_state=want_state, backend=be)
        q, k, v = q.to(cdt), k.to(cdt), v.to(cdt)
        g, w = gates(f, self.dt_bias, self.A_log, w_logits, backend=be)
        u_down = self.u_down if self.content else None
        u_up = self.u_up if self.content else None
        with torch.autocast(x.device.type, enabled=False):
            if decode:
                if state is None:
                    state = CarveState.zeros(B, H, K, V, device=x.device)
                o, new_state = _carve_decode(q[:, 0], k[:, 0], v[:, 0], g[:, 0], a[:, 0], w[:, 0], u_down, u_up,
                                            state, chunk_size=self.chunk_size, content_grad=self.content_grad,
                                            backend=self.operator_backend)
                o = o.unsqueeze(1)
            else:
                o, new_state = _carve(q, k, v, g, a, w, u_down, u_up, chunk_size=self.chunk_size,
                                     content_grad=self.content_grad, initial_state=state,
                                     output_final_state=want_state, cu_seqlens=cu_seqlens,
                                     backend=self.operator_backend)
        gate = gate.view(B, T, H, V)
        y = self.o_norm(o.to(gate.dtype), gate, backend=be).reshape(B, T, H * V)
        return self.o_proj(y), new_conv, new_state

    def forward(self, x: torch.Tensor, *, cu_seqlens: torch.Tensor | None = None,
                valid: torch.Tensor | None = None, cache_layer: RecurrentCacheLayer | None = None,
                **_unused) -> torch.Tensor:
        """x ``[B, T, d]``; ``valid [B, T]`` bool (None = every token real); ``cache_layer`` to read/update."""
        if isinstance(cache_layer, StaticRecurrentLayer):
            return recurrent_step(self, x, cache_layer)
        want = cache_layer is not None
        conv0 = cache_layer.conv_state if want else None
        st0 = cache_layer.state if want else None
        if valid is None:
            decode = want and x.shape[1] == 1 and cu_seqlens is None
            y, conv1, st1 = self._core(x, cu_seqlens=cu_seqlens, conv_state=conv0, state=st0, want_state=want,
                                       decode=decode)
        else:
            y, conv1, st1 = self._padded(x, valid, conv0, st0, want)
        if want:
            cache_layer.conv_state, cache_layer.state = conv1, st1
        return y

    def _padded(self, x, valid, conv0, st0, want):
        """Run only the real tokens: pack each row's real tokens as one sequence (cu_seqlens)."""
        B, T, d = x.shape
        lens = valid.sum(1)
        rows = torch.nonzero(lens > 0).squeeze(1)  # rows with at least one real token
        flat = torch.nonzero(valid.reshape(-1)).squeeze(1)
        cu = F.pad(torch.cumsum(lens[rows], 0), (1, 0))
        xp = x.reshape(B * T, d)[flat].unsqueeze(0)
        conv_r = conv0[rows] if conv0 is not None else None
        st_r = st0.index_select(rows) if st0 is not None else None
        yp, conv_p, st_p = self._core(xp, cu_seqlens=cu, conv_state=conv_r, state=st_r, want_state=want)
        y = x.new_zeros(B * T, yp.shape[-1]).index_copy(0, flat, yp[0].to(x.dtype)).view(B, T, -1)
        if not want:
            return y, None, None
        H, K, V = self.H, self.K, self.V
        conv1 = conv0.clone() if conv0 is not None else x.new_zeros(B, conv_p.shape[1], conv_p.shape[2])
        conv1[rows] = conv_p.to(conv1.dtype)
        st1 = st0 if st0 is not None else CarveState.zeros(B, H, K, V, device=x.device)
        st1 = CarveState(*(t.clone() for t in (st1.S, st1.m_prev, st1.o_sum, st1.pos)))
        st1.S[rows], st1.m_prev[rows], st1.o_sum[rows] = st_p.S, st_p.m_prev, st_p.o_sum
        st1.pos[rows] = st_p.pos
        return y, conv1, st1
