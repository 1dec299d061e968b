"""DLLM2Rec's weights and both variants' losses against hand-computed numbers; the embedding
term; the teacher loader's join and its errors."""
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from dllm2rec.distill import DistillContext, TeacherSplit, TeacherTensors, get_method
from dllm2rec.distill.dllm2rec import (combine_weights, consistency_weight, official_confidence, official_ranking_loss,
                                       paper_confidence, paper_ranking_loss, position_weight)
from dllm2rec.distill.teacher_data import load_teacher
from dllm2rec.io import UserError
from dllm2rec.student import get_backbone
from dllm2rec.student.dros import dro_loss
from synthetic import successor, write_synthetic_dataset, write_synthetic_teacher

E = math.exp


def ls(x):  # -log σ(x)
    return math.log(1 + E(-x))


def test_position_weight():
    w = position_weight(3, 1.0)
    z = E(-1) + E(-2) + E(-3)
    assert w.tolist() == pytest.approx([E(-1) / z, E(-2) / z, E(-3) / z])
    w2 = position_weight(2, 2.0)
    assert w2.tolist() == pytest.approx([E(-0.5) / (E(-0.5) + E(-1)), E(-1) / (E(-0.5) + E(-1))])


def test_paper_confidence_median_scaled_mean_one():
    w = paper_confidence(torch.tensor([10.0, 20.0, 30.0]), 1.0)  # median 20 -> 0.5, 1, 1.5
    raw = [E(-0.5), E(-1), E(-1.5)]
    m = sum(raw) / 3
    assert w.tolist() == pytest.approx([r / m for r in raw], rel=1e-6)
    assert w.mean().item() == pytest.approx(1.0)
    # raw LLaMA-scale distances do not underflow
    big = paper_confidence(torch.tensor([300.0, 400.0, 500.0]), 1.0)
    assert torch.isfinite(big).all() and big.min() > 0


def test_official_confidence_uses_plain_l2_distance():
    # the artifacts store squared distances; the released exp(-d) is on plain L2 (torch.cdist p=2)
    w = official_confidence(torch.tensor([[1.0, 4.0], [100.0, 400.0], [1e6, 4e6]]))
    a, b = E(-1) + 1e-8, E(-2) + 1e-8
    assert w[0].tolist() == pytest.approx([a / (a + b), b / (a + b)])
    a, b = E(-10) + 1e-8, E(-20) + 1e-8  # L2 10 and 20: still informative (exp(-100) would underflow)
    assert w[1].tolist() == pytest.approx([a / (a + b), b / (a + b)], rel=1e-5)
    assert w[1, 0] > 0.99
    assert w[2].tolist() == pytest.approx([0.5, 0.5])  # L2 1000: exp underflows, the released 1e-8 makes it uniform


def test_consistency_weight():
    scores = torch.tensor([[0.0, 5.0, 4.0, 1.0, 3.0], [9.0, 0.0, 1.0, 2.0, 3.0]])
    cand = torch.tensor([[2, 0, 4], [0, 1, 4]])  # student top-2: {1, 2} and {0, 4}
    assert consistency_weight(cand, scores, 2).tolist() == [[1, 0, 0], [1, 0, 1]]


def test_combine_and_losses_by_hand():
    wp = torch.tensor([[0.6, 0.4]])
    wc = torch.tensor([[2.0], [0.5]])
    wo = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    w = combine_weights(wp, wc, wo, 0.3, 0.5, 0.1, renormalise=False)
    torch.testing.assert_close(w, torch.tensor([[0.18 + 1.0 + 0.1, 0.12 + 1.0], [0.18 + 0.25, 0.12 + 0.25]]))
    wn = combine_weights(wp, wc, wo, 0.3, 0.5, 0.1, renormalise=True)
    assert wn.sum(1).tolist() == pytest.approx([1.0, 1.0])
    assert wn[0, 0].item() == pytest.approx(1.28 / (1.28 + 1.12))
    cs = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    paper = paper_ranking_loss(cs, w).item()
    assert paper == pytest.approx(((1.28 * ls(1) + 1.12 * ls(-2)) + (0.43 * ls(0.5) + 0.37 * ls(3))) / 2, rel=1e-6)
    neg = torch.tensor([0.2, -1.0])
    off = official_ranking_loss(cs, neg, wn).item()
    hand = 0.0
    for k in range(2):
        hand += sum(wn[s, k].item() * (ls(cs[s, k].item()) + ls(1 - neg[s].item())) for s in range(2)) / 2
    assert off == pytest.approx(hand, rel=1e-6)
    dro = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
    off_dro = official_ranking_loss(cs, neg, wn, dro, alpha=0.5).item()
    extra = 0.5 * sum(wn[:, k].mean().item() * dro[:, k].mean().item() for k in range(2))
    assert off_dro == pytest.approx(hand + extra, rel=1e-6)


# --- the method end to end on tiny tensors ----------------------------------------------------
N, D, W = 6, 4, 3


def _ctx(k=2):
    items = torch.tensor([[1, 2, 3], [4, 0, 5]])
    dist = torch.tensor([[1.0, 2.0, 3.0], [0.5, 1.5, 9.0]])
    tdist = torch.tensor([2.0, 6.0])
    z = torch.arange(N * W, dtype=torch.float32).view(N, W) / 10
    t = TeacherTensors(item_emb=z, splits={"train": TeacherSplit(items, dist, tdist)})
    hist = torch.tensor([[0, 1, N], [2, 3, 4]])
    return DistillContext(n_items=N, hidden=D, teacher=t, item_counts=torch.ones(N, dtype=torch.long),
                          train_history=hist, train_lengths=torch.tensor([2, 3]), train_target=torch.tensor([2, 5]))


def _method(student, **cfg):
    base = {"type": "dllm2rec", "variant": "paper", "lambda_d": 0.5, "k": 2, "beta": 1.0, "gamma_p": 0.3,
            "gamma_c": 0.5, "gamma_o": 0.1, "ed_weight": 0.3, "projector": "linear", "ranking": True,
            "use_wp": True, "use_wc": True, "use_wo": True, "embedding": True, "offset": True}
    base.update(cfg)
    return get_method("dllm2rec")(base, _ctx(), student)


def _batch(scores):
    from dllm2rec.distill import Batch

    ctx = _ctx()
    return Batch("train", torch.tensor([1, 0]), ctx.train_history[[1, 0]], ctx.train_lengths[[1, 0]],
                 torch.tensor([5, 2]), torch.tensor([3, 5]))


SCORES = torch.tensor([[0.5, 0.0, 1.0, 2.0, 3.0, -1.0],   # row 1 of train: candidates 4, 0; student top-2 {4, 3}
                       [0.0, 1.0, 2.0, -1.0, 0.5, 0.2]])  # row 0: candidates 1, 2; student top-2 {2, 1}


def _paper_hand(gp=0.3, gc=0.5, go=0.1, lam=0.5):
    """Every weight term on one scale: its row sum over the K = 2 candidates is 1 (w^c: on average)."""
    wp = [E(-1) / (E(-1) + E(-2)), E(-2) / (E(-1) + E(-2))]
    # paper confidence: target_dist [2, 6], median 4 -> exp(-0.5), exp(-1.5), mean-normalised, / K
    c = [E(-0.5), E(-1.5)]
    c = [x / (sum(c) / 2) / 2 for x in c]
    assert sum(2 * x for x in c) / 2 == pytest.approx(1.0)  # row sums 2·c_s average 1
    # w^o = Eq. 8's indicator / K: batch row 0 = train row 1 (cands 4, 0; overlap {4}): [1/2, 0];
    # batch row 1 = train row 0 (cands 1, 2; overlap both): [1/2, 1/2]
    w1 = [gp * wp[0] + gc * c[1] + go * 0.5, gp * wp[1] + gc * c[1] + go * 0]
    w0 = [gp * wp[0] + gc * c[0] + go * 0.5, gp * wp[1] + gc * c[0] + go * 0.5]
    l1 = w1[0] * ls(3.0) + w1[1] * ls(0.5)
    l0 = w0[0] * ls(1.0) + w0[1] * ls(2.0)
    return lam * (l1 + l0) / 2


@pytest.mark.parametrize("switch,gammas", [({}, (0.3, 0.5, 0.1)), ({"use_wp": False}, (0, 0.5, 0.1)),
                                           ({"use_wc": False}, (0.3, 0, 0.1)), ({"use_wo": False}, (0.3, 0.5, 0))])
def test_paper_variant_loss_by_hand(switch, gammas):
    student = get_backbone("sasrec")(N, hidden=D, max_len=3)
    m = _method(student, **switch)
    got = m.loss(_batch(SCORES), SCORES, None, student, 0).item()
    assert got == pytest.approx(_paper_hand(*gammas), rel=1e-5)


def test_official_variant_loss_by_hand():
    student = get_backbone("sasrec")(N, hidden=D, max_len=3)
    m = _method(student, variant="official")
    wp = [E(-1) / (E(-1) + E(-2)), E(-2) / (E(-1) + E(-2))]

    def conf(d):
        a = [E(-x) + 1e-8 for x in d]
        return [x / sum(a) for x in a]

    # (wc on the plain L2 distance = sqrt of the stored squared one, wo, cand scores, neg score)
    rows = [(conf([math.sqrt(0.5), math.sqrt(1.5)]), [1, 0], [3.0, 0.5], 2.0),
            (conf([1.0, math.sqrt(2.0)]), [1, 1], [1.0, 2.0], 0.2)]
    total = 0.0
    ws = []
    for wc, wo, cs, neg in rows:
        w = [0.3 * wp[k] + 0.5 * wc[k] + 0.1 * (wo[k] + 1e-8) for k in range(2)]
        w = [x / sum(w) for x in w]
        ws.append(w)
        total += sum(w[k] * (ls(cs[k]) + ls(1 - neg)) for k in range(2)) / 2
    assert m.loss(_batch(SCORES), SCORES, None, student, 0).item() == pytest.approx(0.5 * total, rel=1e-5)
    # with DROS the released mean(w)·mean(L_DRO) term is added, alpha-weighted
    dros = get_backbone("dros")(N, hidden=D, max_len=3, alpha=0.7, item_counts=torch.arange(N))
    m2 = _method(dros, variant="official")
    cand = torch.tensor([[4, 0], [1, 2]])
    dro = dro_loss(SCORES, dros.ps, cand, 1.0)
    extra = 0.7 * sum((ws[0][k] + ws[1][k]) / 2 * dro[:, k].mean().item() for k in range(2))
    assert m2.loss(_batch(SCORES), SCORES, None, dros, 0).item() == pytest.approx(0.5 * (total + extra), rel=1e-5)


def test_ranking_switch_and_eval_split_give_zero():
    student = get_backbone("gru4rec")(N, hidden=D, max_len=3)
    assert _method(student, ranking=False).loss(_batch(SCORES), SCORES, None, student, 0).item() == 0.0
    b = _batch(SCORES)
    b.split = "valid"
    assert _method(student).loss(b, SCORES, None, student, 0).item() == 0.0


def test_consistency_weight_is_eq8_in_paper_and_the_released_indicator_in_official():
    """paper: Eq. 8's 0/1 indicator times the constant 1/K (an overlapping candidate weighs 1/K
    whether its row overlaps once or K times); official: indicator + 1e-8, renormalised with the
    other terms (istarryn/DLLM2Rec main.py)."""
    from dllm2rec.distill.dllm2rec import official_consistency, paper_consistency

    o = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert paper_consistency(o, 4).tolist() == [[0.25, 0, 0, 0], [0.25, 0.25, 0.25, 0], [0, 0, 0, 0]]
    assert torch.equal(official_consistency(o), o + 1e-8)
    # in the combined weight: paper keeps the indicator's share, official renormalises the row
    wp, wc = torch.full((1, 4), 0.25), torch.full((1, 4), 0.25)
    paper = combine_weights(wp, wc, paper_consistency(o[:1], 4), 0.3, 0.5, 0.1, renormalise=False)
    assert paper[0].tolist() == pytest.approx([0.3 * 0.25 + 0.5 * 0.25 + 0.1 * 0.25, 0.2, 0.2, 0.2])
    official = combine_weights(wp, wc, official_consistency(o[:1]), 0.3, 0.5, 0.1, renormalise=True)
    raw = [0.2 + 0.1 * (1 + 1e-8), 0.2 + 1e-9, 0.2 + 1e-9, 0.2 + 1e-9]
    assert official[0].tolist() == pytest.approx([x / sum(raw) for x in raw])


def test_consistency_is_not_differentiated():
    student = get_backbone("gru4rec")(N, hidden=D, max_len=3)
    m = _method(student, use_wp=False, use_wc=False)
    s = SCORES.clone().requires_grad_(True)
    m.loss(_batch(SCORES), s, None, student, 0).backward()
    # d/dŷ of -w log σ(ŷ) = -w σ(-ŷ): only candidate columns get gradient
    g = s.grad
    assert g[0, 4].item() == pytest.approx(0.5 * -0.1 * 0.5 * (1 / (1 + E(3.0))) / 2, rel=1e-5)  # w^o = 1/K
    assert g[0, 0].item() == 0.0  # w = 0 there (not in the student top-2, other weights off)
    assert g[0, [1, 2, 3, 5]].abs().sum().item() == 0.0


@pytest.mark.parametrize("projector", ["linear", "mlp"])
def test_embedding_term(projector):
    torch.manual_seed(0)
    student = get_backbone("sasrec")(N, hidden=D, max_len=3)
    m = _method(student, projector=projector)
    z = _ctx().teacher.item_emb
    table = m.item_table(student)
    expected = student.item_emb.weight + 0.3 * torch.cat([m.projector(z), torch.zeros(1, D)])
    torch.testing.assert_close(table, expected)
    assert table[N].abs().sum().item() == 0.0  # padding row stays 0
    hist = torch.tensor([[0, 3, N], [5, 3, 3]])
    part = m.item_table_for(student, hist)
    used = torch.tensor([0, 3, 5, N])
    torch.testing.assert_close(part[used], table[used])
    no_off = _method(student, projector=projector, offset=False)
    torch.testing.assert_close(no_off.item_table(student)[:N], no_off.projector(z))
    torch.testing.assert_close(no_off.item_table_for(student, hist)[used], no_off.item_table(student)[used])
    assert _method(student, embedding=False).item_table(student) is student.item_emb.weight
    # the projector is trained: it gets a gradient through the table
    part.sum().backward()
    assert m.projector.parameters().__next__().grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["hint", "htd"])
def test_embedding_term_swapped_for_hint_or_htd(name):
    """Table 8: the collaborative embedding term replaced by Hint/HTD: plain ID table, loss = ranking + that loss."""
    torch.manual_seed(0)
    student = get_backbone("sasrec")(N, hidden=D, max_len=3)
    m = _method(student, embedding_method=name)
    assert m.item_table(student) is student.item_emb.weight
    assert type(m.embedding_kd).name == name
    b = _batch(SCORES)
    rng = m.embedding_kd.rng_state()  # HTD draws Gumbel noise: the second call must draw the same
    swapped = m.embedding_kd.loss(b, SCORES, None, student, 0).item()
    m.embedding_kd.set_rng_state(rng)
    assert swapped > 0
    assert m.loss(b, SCORES, None, student, 0).item() == pytest.approx(_paper_hand() + swapped, rel=1e-5)
    # its parameters (Hint's regressor) are trained with the student
    assert {id(p) for p in m.embedding_kd.parameters()} <= {id(p) for p in m.parameters()}
    with pytest.raises(UserError, match="embedding_method"):
        _method(student, embedding_method="bogus")


def test_required_parts_follow_switches():
    cls = get_method("dllm2rec")
    assert cls.required_parts({"type": "dllm2rec"}) == {"ranks", "item_embeddings"}
    assert cls.required_parts({"type": "dllm2rec", "embedding": False}) == {"ranks"}
    assert cls.required_parts({"type": "dllm2rec", "ranking": False}) == {"item_embeddings"}
    assert get_method("none").required_parts({"type": "none"}) == frozenset()
    with pytest.raises(UserError, match="methods.dllm2rec.lamda_d: unknown option"):
        cls.required_parts({"type": "dllm2rec", "lamda_d": 1})


# --- teacher loader --------------------------------------------------------------------------
@pytest.fixture
def synthetic(tmp_path):
    data, teacher = tmp_path / "data", tmp_path / "teacher"
    write_synthetic_dataset(data, n_items=40, n_sequences=200, seed=3)
    write_synthetic_teacher(teacher, data, topn=12, width=8, quality=1.0, rule_seed=3)
    seqs = pq.read_table(data / "sequences.parquet").to_pydict()
    ids = {s: np.array([i for i, sp in zip(seqs["seq_id"], seqs["split"]) if sp == s]) for s in ("train", "valid", "test")}
    return data, teacher, ids, seqs


def test_teacher_joined_by_seq_id(synthetic):
    data, teacher, ids, seqs = synthetic
    t = load_teacher(teacher, ids, 40, {"ranks", "item_embeddings", "generated_embeddings"})
    succ = successor(40, 3)
    last = [h[-1] for h, sp in zip(seqs["history"], seqs["split"]) if sp == "valid"]
    tv = t.splits["valid"]
    assert tv.topk_items.shape == (20, 12) and tv.topk_items.dtype == torch.long
    assert tv.topk_items[:, 0].tolist() == [int(succ[x]) for x in last]  # row order = the split's order
    assert (tv.topk_dist[:, 1:] >= tv.topk_dist[:, :-1]).all()
    assert t.item_emb.shape == (40, 8) and tv.gen_emb.shape == (20, 8) and tv.gen_emb.dtype == torch.float32
    # item embeddings ordered by item_id although the file is shuffled
    emb = pq.read_table(teacher / "item_embeddings.parquet").to_pydict()
    row = emb["item_id"].index(7)
    assert t.item_emb[7].tolist() == pytest.approx(emb["embedding"][row])
    only = load_teacher(teacher, {"train": ids["train"]}, 40, {"ranks"})
    assert set(only.splits) == {"train"} and only.item_emb.numel() == 0


def _rewrite(path, fn):
    t = pq.read_table(path)
    pq.write_table(fn(t), path)


def test_teacher_missing_seq_id(synthetic):
    data, teacher, ids, _ = synthetic
    _rewrite(teacher / "ranks" / "train.parquet", lambda t: t.slice(1))
    with pytest.raises(UserError, match=r"ranks/train\.parquet.*missing.*rerun the teacher"):
        load_teacher(teacher, ids, 40, {"ranks"})


def test_teacher_extra_or_duplicate_seq_id(synthetic):
    data, teacher, ids, _ = synthetic
    with pytest.raises(UserError, match="does not have"):
        load_teacher(teacher, {"train": ids["train"][:-1]}, 40, {"ranks"})
    _rewrite(teacher / "ranks" / "valid.parquet", lambda t: pa.concat_tables([t, t.slice(0, 1)]))
    with pytest.raises(UserError, match="more than once"):
        load_teacher(teacher, ids, 40, {"ranks"})


def test_teacher_item_out_of_range(synthetic):
    data, teacher, ids, _ = synthetic
    with pytest.raises(UserError, match=r"item id \d+ is outside 0\.\.29.*rerun the teacher"):
        load_teacher(teacher, ids, 30, {"ranks"})


def test_teacher_embedding_table_wrong_size(synthetic):
    data, teacher, ids, _ = synthetic
    _rewrite(teacher / "item_embeddings.parquet", lambda t: t.slice(0, 39))
    with pytest.raises(UserError, match=r"item_embeddings\.parquet.*0\.\.39.*rerun the teacher"):
        load_teacher(teacher, ids, 40, {"item_embeddings"})
    with pytest.raises(UserError, match="not found"):
        load_teacher(teacher / "nope", ids, 40, {"ranks"})
