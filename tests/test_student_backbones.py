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


def _released_sasrec_state(m, states, len_states, num_heads):
    """Transcription of the released SASRec forward (istarryn/DLLM2Rec main.py ``SASRec.forward``
    with ``MultiHeadAttention`` and ``PositionwiseFeedForward`` of ``SASRecModules_ori.py``),
    reading the weights of our model ``m`` (one block) by name. Written from the released
    equations, not from our Block."""
    blk = m.blocks[0]
    hidden, T = m.hidden, states.shape[1]
    ln = lambda x, mod: F.layer_norm(x, (hidden,), mod.weight, mod.bias, mod.eps)
    lin = lambda x, mod: x @ mod.weight.T + mod.bias
    inputs_emb = m.item_emb.weight[states] + m.pos_emb.weight[torch.arange(T)]
    mask = (states != m.n_items).float().unsqueeze(-1)
    seq = inputs_emb * mask
    seq_normalized = ln(seq, blk.ln_q)  # ln_1
    # MultiHeadAttention(queries=seq_normalized, keys=seq)
    queries, keys = seq_normalized, seq
    Q, K, V = lin(queries, blk.q), lin(keys, blk.k), lin(keys, blk.v)
    split = hidden // num_heads
    Q_, K_, V_ = (torch.cat(torch.split(t, split, dim=2), dim=0) for t in (Q, K, V))
    mat = torch.bmm(Q_, K_.transpose(1, 2)) / hidden ** 0.5
    key_mask = torch.sign(torch.abs(keys.sum(dim=-1))).repeat(num_heads, 1).unsqueeze(1).repeat(1, T, 1)
    mat = torch.where(key_mask == 0, torch.full_like(mat, -2 ** 32 + 1), mat)
    tril = torch.tril(torch.ones_like(mat[0])).unsqueeze(0).repeat(mat.shape[0], 1, 1)
    mat = torch.where(tril == 0, torch.full_like(mat, -2 ** 32 + 1), mat)
    sm = torch.softmax(mat, dim=-1)
    query_mask = torch.sign(torch.abs(queries.sum(dim=-1))).repeat(num_heads, 1).unsqueeze(-1).repeat(1, 1, T)
    out = torch.bmm(sm * query_mask, V_)
    out = torch.cat(torch.split(out, out.shape[0] // num_heads, dim=0), dim=2)
    mh_attn_out = out + queries
    # PositionwiseFeedForward(ln_2(mh_attn_out)): 1x1 convolutions, then LayerNorm(output + residual)
    x = ln(mh_attn_out, blk.ln_ff)  # ln_2
    residual = x
    h = F.relu(F.conv1d(x.transpose(1, 2), blk.ff1.weight.unsqueeze(-1), blk.ff1.bias))
    o = F.conv1d(h, blk.ff2.weight.unsqueeze(-1), blk.ff2.bias).transpose(1, 2)
    ff_out = ln(o + residual, blk.ln_ff_out)  # the feed-forward's own layer_norm
    ff_out = ff_out * mask
    ff_out = ln(ff_out, m.ln_out)  # ln_3
    return ff_out[torch.arange(states.shape[0]), len_states - 1]


@pytest.mark.parametrize("name,heads", [("sasrec", 1), ("sasrec", 2), ("dros", 1)])
def test_sasrec_block_matches_released_equations(name, heads):
    torch.manual_seed(0)
    m = get_backbone(name)(N, hidden=16, dropout=0.1, max_len=6, num_heads=heads).eval()
    with torch.no_grad():  # every weight random, LayerNorm affines included, so each one matters
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.5 + (1.0 if p.dim() == 1 and p.shape[0] == 16 else 0.0))
        m.item_emb.weight[N].zero_()
    history, lengths = _batch()
    with torch.no_grad():
        ours = m.encode(history, lengths)
        ref = _released_sasrec_state(m, history, lengths, heads)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
        # the check is sharp: without the feed-forward's LayerNorm the states differ clearly
        m.blocks[0].ln_ff_out = torch.nn.Identity()
        assert (m.encode(history, lengths) - ref).abs().max() > 1e-2


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
