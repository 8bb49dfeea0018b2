import math

import torch
import torch.nn.functional as F

from hybrid.blocks import RecurrentMixer, RMSNorm, SwiGLU, normalize_block
from hybrid.blocks.norms import GatedHeadRMSNorm
from hybrid.ops.carve import carve_reference
from hybrid.ops.short_conv import short_conv

D = 32


def _mixer(kind, **kw):
    block = normalize_block({"kind": kind, "heads": 2, "head_dim": 16, "chunk_size": 8, "gate_rank": 8, **kw})
    return RecurrentMixer(block, D)


def test_rmsnorm_and_swiglu():
    x = torch.randn(3, 5, D)
    n = RMSNorm(D, eps=1e-6)
    y = n(x)
    torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(3, 5), atol=1e-4, rtol=1e-4)
    mlp = SwiGLU(D, 48)
    g, u = mlp.gate_up_proj(x).chunk(2, -1)
    torch.testing.assert_close(mlp(x), mlp.down_proj(F.silu(g) * u))
    gn = GatedHeadRMSNorm(8)
    h, gate = torch.randn(2, 4, 3, 8), torch.randn(2, 4, 3, 8)
    ref = h / h.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt() * F.silu(gate)
    torch.testing.assert_close(gn(h, gate), ref, atol=1e-5, rtol=1e-5)


def test_short_conv_definition_and_state():
    C, width = 5, 4
    x, w = torch.randn(2, 9, C), torch.randn(C, width)
    y, st = short_conv(x, w, output_final_state=True)
    xp = F.pad(x, (0, 0, width - 1, 0))
    ref = sum(w[:, i] * xp[:, i:i + 9] for i in range(width))
    torch.testing.assert_close(y, ref, atol=1e-6, rtol=1e-6)
    # splitting the sequence and carrying the state gives the same output
    y1, s1 = short_conv(x[:, :4], w, output_final_state=True)
    y2, s2 = short_conv(x[:, 4:], w, initial_state=s1, output_final_state=True)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(s2, st)


def test_short_conv_packed_restarts_per_document():
    C, width = 6, 4
    x, w = torch.randn(1, 14, C), torch.randn(C, width)
    cu = torch.tensor([0, 2, 2, 9, 14])
    init = torch.randn(4, C, width - 1)
    for carried in (None, init):
        y, st = short_conv(x, w, cu_seqlens=cu, initial_state=carried, output_final_state=True)
        for n in range(4):
            s, e = cu[n].item(), cu[n + 1].item()
            yn, sn = short_conv(x[:, s:e], w, initial_state=None if carried is None else carried[n:n + 1],
                                output_final_state=True)
            torch.testing.assert_close(y[:, s:e], yn, atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(st[n:n + 1], sn)


def test_short_conv_packed_gradients_match_per_document():
    """Gradients (input, weight, carried state) of the packed path equal those of one call per document,
    including documents shorter than the kernel and an empty one."""
    C, width = 5, 4
    cu = torch.tensor([0, 1, 1, 7, 9, 15])
    n = len(cu) - 1

    def leaves():
        torch.manual_seed(3)
        return (torch.randn(1, 15, C, dtype=torch.float64, requires_grad=True),
                torch.randn(C, width, dtype=torch.float64, requires_grad=True),
                torch.randn(n, C, width - 1, dtype=torch.float64, requires_grad=True))

    torch.manual_seed(4)
    gy, gs = torch.randn(1, 15, C, dtype=torch.float64), torch.randn(n, C, width - 1, dtype=torch.float64)
    x, w, s0 = leaves()
    y, st = short_conv(x, w, cu_seqlens=cu, initial_state=s0, output_final_state=True)
    ((y * gy).sum() + (st * gs).sum()).backward()
    x2, w2, s2 = leaves()
    total = 0
    for j in range(n):
        a, b = cu[j].item(), cu[j + 1].item()
        yj, sj = short_conv(x2[:, a:b], w2, initial_state=s2[j:j + 1], output_final_state=True)
        total = total + (yj * gy[:, a:b]).sum() + (sj * gs[j:j + 1]).sum()
    total.backward()
    for got, want in ((x.grad, x2.grad), (w.grad, w2.grad), (s0.grad, s2.grad)):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


def test_carve_layer_init_follows_the_spec():
    torch.manual_seed(1)
    m = _mixer("carve", heads=4)
    A = m.A_log.exp()
    assert A.shape == (4,) and (A >= 1).all() and (A <= 16).all()
    dt = F.softplus(m.dt_bias)
    assert m.dt_bias.shape == (4 * 16,) and (dt >= 1e-3 * 0.999).all() and (dt <= 0.1 * 1.001).all()
    assert (m.u_up == 0).all() and m.u_down.abs().sum() > 0
    assert m.w_proj.weight.shape == (4, D)  # one write scalar per head
    fan = D + 4 * 16
    bound = 2 ** -2.5 * math.sqrt(6 / fan)
    assert m.q_proj.weight.abs().max() <= bound
    g, a, w = m.gates(torch.randn(2, 7, D))
    assert g.dtype == torch.float32 and (g <= 0).all() and w.shape == (2, 7, 4)
    assert _mixer("gdn2").w_proj.weight.shape == (2 * 16, D)


def test_carve_layer_equals_gdn2_with_broadcast_write_gate_at_init():
    """With U_up = 0, CARVE's erase path equals GDN-2 whose vector write gate repeats the head's scalar."""
    torch.manual_seed(2)
    c, g2 = _mixer("carve"), _mixer("gdn2")
    sd = {k: v for k, v in c.state_dict().items() if k not in ("w_proj.weight", "u_down", "u_up")}
    g2.load_state_dict({**sd, "w_proj.weight": c.w_proj.weight.repeat_interleave(16, dim=0)})
    x = torch.randn(2, 21, D)
    torch.testing.assert_close(c(x), g2(x), atol=1e-6, rtol=1e-6)
    with torch.no_grad():
        c.u_up.normal_(0, 10.0)
    yc, yg = c(x), g2(x)
    # the content term is lagged one chunk (8 tokens): it cannot change chunk 0, and it changes the rest
    torch.testing.assert_close(yc[:, :8], yg[:, :8], atol=1e-7, rtol=1e-6)
    assert (yc[:, 8:] - yg[:, 8:]).abs().max() > 1e-3 * yg.abs().max()


def test_carve_layer_matches_reference_operator():
    """The layer's mixing equals the float64 reference recurrence on the same gates."""
    torch.manual_seed(3)
    m = _mixer("carve").double()
    with torch.no_grad():
        m.u_up.normal_(0, 0.5)
    x = torch.randn(2, 19, D, dtype=torch.float64)
    B, T = 2, 19
    qkv = torch.cat([m.q_proj(x), m.k_proj(x), m.v_proj(x)], -1)
    qkv = F.silu(short_conv(qkv, m.conv_weight)[0])
    q, k, v = qkv.split([32, 32, 32], -1)
    q = F.normalize(q.view(B, T, 2, 16), dim=-1)
    k = F.normalize(k.view(B, T, 2, 16), dim=-1)
    g, a, w = m.gates(x)
    o, _ = carve_reference(q, k, v.view(B, T, 2, 16), g.double(), a, w, m.u_down, m.u_up, chunk_size=8)
    y = m.o_proj(m.o_norm(o, m.g_proj(x).view(B, T, 2, 16)).reshape(B, T, 32))
    torch.testing.assert_close(m(x), y, atol=1e-9, rtol=1e-9)


def test_content_projection_learns_from_init():
    torch.manual_seed(4)
    m = _mixer("carve")
    m(torch.randn(2, 24, D)).square().sum().backward()
    assert m.u_up.grad is not None and m.u_up.grad.abs().sum() > 0
    assert m.A_log.grad.abs().sum() > 0 and m.dt_bias.grad.abs().sum() > 0


def test_padded_rows_equal_unpadded():
    torch.manual_seed(5)
    m = _mixer("carve")
    with torch.no_grad():
        m.u_up.normal_(0, 0.5)
    x = torch.randn(3, 20, D)
    valid = torch.ones(3, 20, dtype=torch.bool)
    valid[1, :7] = False
    valid[2, :] = False
    y = m(x, valid=valid)
    torch.testing.assert_close(y[0], m(x[:1])[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(y[1, 7:], m(x[1:2, 7:])[0], atol=1e-6, rtol=1e-6)
    assert (y[2] == 0).all()
