"""Packed documents (cu_seqlens, batch 1) equal the documents run one by one (fp32, CPU)."""

import pytest
import torch
from test_model_layouts import LAYOUTS, VOCAB, make_model

CU = [0, 9, 9, 26, 31, 45]  # includes an empty document and documents crossing chunk boundaries (chunk 8)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_packed_equals_one_by_one(layout):
    model = make_model(LAYOUTS[layout])
    x = torch.randint(0, VOCAB, (1, CU[-1]))
    cu = torch.tensor(CU, dtype=torch.int32)
    with torch.no_grad():
        packed = model(x, cu_seqlens=cu).logits
        for s, e in zip(CU[:-1], CU[1:]):
            if e > s:
                alone = model(x[:, s:e]).logits
                torch.testing.assert_close(packed[:, s:e], alone, atol=2e-5, rtol=1e-4)
        # and packing really matters: without cu_seqlens the later documents differ
        plain = model(x).logits
    assert (plain[:, 26:] - packed[:, 26:]).abs().max() > 1e-3


def test_packed_gradients_equal_one_by_one():
    model = make_model(LAYOUTS["1to1_swa"]).train()
    x = torch.randint(0, VOCAB, (1, 30))
    cu = torch.tensor([0, 13, 30])
    model(x, cu_seqlens=cu).logits.square().sum().backward()
    packed = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    for s, e in ((0, 13), (13, 30)):
        model(x[:, s:e]).logits.square().sum().backward()
    for a, b in zip(packed, (p.grad for p in model.parameters())):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_packed_loss_ignores_cross_document_targets():
    model = make_model(LAYOUTS["3to1"])
    x = torch.randint(0, VOCAB, (1, 20))
    cu = torch.tensor([0, 8, 20])
    with torch.no_grad():
        out = model(x, labels=x, cu_seqlens=cu)
        lp = torch.log_softmax(out.logits[0].float(), -1)
        # targets: t -> t+1 inside each document only (7 + 11 = 18 targets)
        pairs = [(t, t + 1) for t in range(0, 7)] + [(t, t + 1) for t in range(8, 19)]
        ref = -torch.stack([lp[t, x[0, u]] for t, u in pairs]).mean()
    torch.testing.assert_close(out.loss, ref, atol=1e-6, rtol=1e-6)


def test_packed_rope_positions_restart():
    """An attention-only model sees each document from position 0: shifting a document's place in the
    pack does not change its logits."""
    model = make_model(LAYOUTS["attention"])
    a, b = torch.randint(0, VOCAB, (1, 7)), torch.randint(0, VOCAB, (1, 10))
    with torch.no_grad():
        ab = model(torch.cat([a, b], 1), cu_seqlens=torch.tensor([0, 7, 17])).logits
        ba = model(torch.cat([b, a], 1), cu_seqlens=torch.tensor([0, 10, 17])).logits
    torch.testing.assert_close(ab[:, :7], ba[:, 10:], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ab[:, 7:], ba[:, :10], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("packed", [False, True])
def test_head_at_targets_only_gives_the_same_loss_and_gradients(packed):
    """``logits_at_targets=True`` applies the head only where a target is: the loss and every gradient
    equal the full head's, with sparse targets and a document boundary whose cross target is dropped."""
    model = make_model(LAYOUTS["3to1"]).train()
    x = torch.randint(0, VOCAB, (1, 20))
    labels = torch.full_like(x, -100)
    labels[0, [3, 8, 9, 15, 19]] = x[0, [3, 8, 9, 15, 19]]
    kw = {"cu_seqlens": torch.tensor([0, 8, 20])} if packed else {}
    full = model(x, labels=labels, **kw)
    full.loss.backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    sparse = model(x, labels=labels, logits_at_targets=True, **kw)
    assert sparse.logits is None
    sparse.loss.backward()
    torch.testing.assert_close(sparse.loss, full.loss, atol=1e-6, rtol=1e-6)
    for a, b in zip(ref, (p.grad for p in model.parameters())):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    # the boundary target (position 7 -> token 8, the next document's first) is ignored only when packed
    n = 4 if packed else 5
    lp = torch.log_softmax(full.logits[0, :-1].detach().float(), -1)
    keep = [t for t in (2, 7, 8, 14, 18) if not (packed and t == 7)]
    assert len(keep) == n
    torch.testing.assert_close(full.loss.detach(), -torch.stack([lp[t, labels[0, t + 1]] for t in keep]).mean())
