"""Backbones, the recommendation loss, the DRO loss and the negative sampler."""
import math

import pytest
import torch
import torch.nn.functional as F

from dllm2rec.student import get_backbone
from dllm2rec.student.dros import dro_loss, propensity
from dllm2rec.student.train import sample_negatives

N = 30


def _batch():
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([1, 4, 6, 3])
    history = torch.randint(0, N, (4, 6), generator=g)
    history[torch.arange(6).unsqueeze(0) >= lengths.unsqueeze(1)] = N  # right padding
    return history, lengths


@pytest.mark.parametrize("name", ["gru4rec", "sasrec", "dros"])
def test_backbone_shapes_and_padding_invariance(name):
    torch.manual_seed(0)
    model = get_backbone(name)(N, hidden=16, dropout=0.1, max_len=8).eval()
    history, lengths = _batch()
    state = model.encode(history, lengths)
    assert state.shape == (4, 16) and torch.isfinite(state).all()
    assert model.scores(state).shape == (4, N)
    # more right padding does not change the state at the last real position
    wider = torch.cat([history, torch.full((4, 2), N)], 1)
    torch.testing.assert_close(model.encode(wider, lengths), state)
    # items after the last real position (causality) do not matter either
    poked = history.clone()
    poked[0, 1:] = 5
    torch.testing.assert_close(model.encode(poked, lengths)[0], state[0])


def test_gru4rec_matches_packed_last_hidden_state():
    torch.manual_seed(0)
    model = get_backbone("gru4rec")(N, hidden=16, max_len=6).eval()
    history, lengths = _batch()
    emb = model.item_emb(history)
    packed = torch.nn.utils.rnn.pack_padded_sequence(emb, lengths, batch_first=True, enforce_sorted=False)
    _, h = model.gru(packed)
    torch.testing.assert_close(model.encode(history, lengths), h[-1])


def test_sasrec_heads_blocks_configurable():
    m = get_backbone("sasrec")(N, hidden=16, max_len=6, num_heads=2, num_blocks=3).eval()
    assert len(m.blocks) == 3 and m.blocks[0].h == 2
    history, lengths = _batch()
    assert torch.isfinite(m.encode(history, lengths)).all()


def test_rec_loss_is_bce_with_one_negative():
    model = get_backbone("sasrec")(4, hidden=8, max_len=3)
    scores = torch.tensor([[2.0, -1.0, 0.5, 0.0], [0.3, 0.1, -2.0, 4.0]])
    target, negative = torch.tensor([0, 3]), torch.tensor([1, 2])
    logits = torch.tensor([2.0, 4.0, -1.0, -2.0])
    labels = torch.tensor([1.0, 1.0, 0.0, 0.0])
    expected = F.binary_cross_entropy_with_logits(logits, labels)
    torch.testing.assert_close(model.rec_loss(scores, target, negative), expected)
    # by hand: -(log σ(2) + log σ(4) + log(1-σ(-1)) + log(1-σ(-2))) / 4
    sig = lambda x: 1 / (1 + math.exp(-x))
    hand = -(math.log(sig(2)) + math.log(sig(4)) + math.log(1 - sig(-1)) + math.log(1 - sig(-2))) / 4
    assert model.rec_loss(scores, target, negative).item() == pytest.approx(hand, rel=1e-6)
    # stable for extreme logits
    assert torch.isfinite(model.rec_loss(scores * 1e4, target, negative))


def _dro_direct(scores, ps, t, beta):
    s = scores.double()
    ps = ps.double()
    a = torch.exp(ps * s**2 / beta).sum(1)
    st = s[torch.arange(len(t)), t]
    pt = ps[t]
    return torch.log(a - torch.exp(pt * st**2 / beta) + torch.exp(pt * (st - 1) ** 2 / beta))


def test_propensity_formula():
    counts = torch.tensor([0, 1, 3])
    expected = torch.tensor([1 / 7, 2 / 7, 4 / 7]) ** 0.05
    torch.testing.assert_close(propensity(counts, 0.05), expected)


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_dro_loss_against_direct_formula(beta):
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(5, 7, generator=g) * 2
    ps = propensity(torch.randint(0, 9, (7,), generator=g), 0.05)
    t = torch.tensor([0, 3, 6, 2, 2])
    torch.testing.assert_close(dro_loss(scores, ps, t, beta).double(), _dro_direct(scores, ps, t, beta), rtol=1e-5, atol=1e-5)
    # the [B, K] form is the per-column [B] form
    tk = torch.stack([t, (t + 1) % 7], 1)
    many = dro_loss(scores, ps, tk, beta)
    for k in range(2):
        torch.testing.assert_close(many[:, k], dro_loss(scores, ps, tk[:, k], beta))
    # finite where the direct formula overflows float32
    assert torch.isfinite(dro_loss(scores * 30, ps, t, beta)).all()


def test_dros_rec_loss_adds_alpha_dro():
    counts = torch.tensor([3, 0, 1, 2, 5])
    m = get_backbone("dros")(5, hidden=8, max_len=3, alpha=0.7, beta=1.0, ps_power=0.05, item_counts=counts)
    plain = get_backbone("sasrec")(5, hidden=8, max_len=3)
    scores = torch.randn(3, 5)
    t, neg = torch.tensor([0, 2, 4]), torch.tensor([1, 1, 0])
    expected = plain.rec_loss(scores, t, neg) + 0.7 * _dro_direct(scores, propensity(counts, 0.05), t, 1.0).mean().float()
    torch.testing.assert_close(m.rec_loss(scores, t, neg), expected)


def test_negative_sampler_excludes_history_and_target():
    g = torch.Generator().manual_seed(0)
    n = 12
    history = torch.randint(0, n, (5000, 10), generator=g)
    history[:, 8:] = n
    target = torch.randint(0, n, (5000,), generator=g)
    neg = sample_negatives(history, target, n, g)
    assert not (neg.unsqueeze(1) == history).any(1).any()
    assert not (neg == target).any()
    assert ((neg >= 0) & (neg < n)).all()
    # uniform over the allowed items: the first row's allowed set, sampled many times
    h1, t1 = history[:1].expand(6000, -1), target[:1].expand(6000)
    draws = sample_negatives(h1.contiguous(), t1.contiguous(), n, g)
    allowed = sorted(set(range(n)) - set(history[0].tolist()) - {int(target[0])})
    counts = torch.bincount(draws, minlength=n)[allowed].double()
    assert set(draws.tolist()) == set(allowed)
    assert (counts / counts.mean() - 1).abs().max() < 0.15
