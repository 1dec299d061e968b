"""Table 5 baselines (dllm2rec/distill/{hint,htd,rd,cd,rrd,dcd,unkd,kar,llmcf}.py).

Per method: the loss (or feature) on a tiny hand-built batch equals a value computed here
independently with explicit loops, and training on it moves a tiny stand-in student towards the
teacher. The stand-in student satisfies SequentialRecommender with a mean-of-history encoder,
so these tests do not depend on the real backbones.
"""
from __future__ import annotations

import math
import statistics

import pytest
import torch
import torch.nn.functional as F

from dllm2rec.distill.base import (
    Batch,
    DistillContext,
    TeacherSplit,
    TeacherTensors,
    get_method,
)
from dllm2rec.student.base import SequentialRecommender

N_ITEMS, HIDDEN, D_T, L = 8, 4, 6, 3


class TinyStudent(SequentialRecommender):
    def encode(self, history, lengths, table=None):
        table = self.item_emb.weight if table is None else table
        real = (history != self.pad).float().unsqueeze(-1)
        return (table[history] * real).sum(1) / real.sum(1).clamp_min(1)

    def rec_loss(self, scores, target, negative):
        pos = scores.gather(1, target.view(-1, 1))
        neg = scores.gather(1, negative.view(-1, 1))
        return -(F.logsigmoid(pos) + F.logsigmoid(-neg)).mean()


def sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def logsig(x):
    return -math.log1p(math.exp(-x))


# --- toy data -------------------------------------------------------------------------------
TRAIN_HIST = [[0, 1, 8], [2, 3, 4], [5, 6, 7], [1, 2, 3], [4, 5, 8], [6, 7, 0]]
TRAIN_LEN = [2, 3, 3, 3, 2, 3]
TRAIN_TGT = [2, 5, 0, 4, 6, 1]
VALID_HIST = [[0, 2, 4], [1, 8, 8]]
VALID_LEN = [3, 1]
VALID_TGT = [6, 3]
TOPN = 5


def make_split(s: int, gen: torch.Generator) -> TeacherSplit:
    items = torch.stack([torch.randperm(N_ITEMS, generator=gen)[:TOPN] for _ in range(s)])
    dist = torch.sort(10 + 5 * torch.rand(s, TOPN, generator=gen), dim=1).values
    return TeacherSplit(items, dist, 10 + torch.rand(s, generator=gen), torch.randn(s, D_T, generator=gen).half())


def make_ctx(seed: int = 0) -> DistillContext:
    gen = torch.Generator().manual_seed(1234)
    teacher = TeacherTensors(
        item_emb=torch.randn(N_ITEMS, D_T, generator=gen) * 3 + 1,
        splits={"train": make_split(len(TRAIN_HIST), gen), "valid": make_split(len(VALID_HIST), gen)},
    )
    tgt = torch.tensor(TRAIN_TGT)
    return DistillContext(n_items=N_ITEMS, hidden=HIDDEN, teacher=teacher,
                          item_counts=torch.bincount(tgt, minlength=N_ITEMS) + torch.tensor([9, 7, 5, 3, 2, 1, 0, 0]),
                          train_history=torch.tensor(TRAIN_HIST), train_lengths=torch.tensor(TRAIN_LEN),
                          train_target=tgt, seed=seed, max_epochs=5)


def train_batch(rows=(0, 1, 2, 3)) -> Batch:
    rows = torch.tensor(rows)
    return Batch("train", rows, torch.tensor(TRAIN_HIST)[rows], torch.tensor(TRAIN_LEN)[rows],
                 torch.tensor(TRAIN_TGT)[rows], negative=torch.tensor([7, 0, 3, 6, 2, 4])[rows])


def build(name: str, cfg: dict | None = None, seed: int = 0):
    torch.manual_seed(seed)
    ctx = make_ctx(seed)
    student = TinyStudent(N_ITEMS, hidden=HIDDEN, dropout=0.0)
    method = get_method(name)({"type": name, **(cfg or {})}, ctx, student)
    return ctx, student, method


def forward(student, method, batch):
    table = method.item_table_for(student, batch.history)
    state = method.adjust_state(student.encode(batch.history, batch.lengths, table), batch)
    return student.scores(state), state


def mean_teacher_top1_rank(ctx, student, method, batch) -> float:
    """Mean 1-based rank (student) of the teacher's first item, over the batch."""
    with torch.no_grad():
        scores, _ = forward(student, method, batch)
    top1 = ctx.teacher.splits["train"].topk_items[batch.rows, 0]
    ranks = [1 + sum(1 for j in range(N_ITEMS) if scores[b, j] > scores[b, top1[b]]) for b in range(len(top1))]
    return sum(ranks) / len(ranks)


def distill_only_sgd(ctx, student, method, batch, steps=60, lr=0.5, epoch=0, adam=False):
    params = list(student.parameters()) + list(method.parameters())
    opt = torch.optim.Adam(params, lr=lr) if adam else torch.optim.SGD(params, lr=lr)
    for _ in range(steps):
        scores, state = forward(student, method, batch)
        loss = method.loss(batch, scores, state, student, epoch)
        opt.zero_grad()
        loss.backward()
        opt.step()


def zscore_lists(z: torch.Tensor) -> list[list[float]]:
    """Per-dimension z-score with explicit loops (population std)."""
    rows, cols = z.shape
    out = [[0.0] * cols for _ in range(rows)]
    for d in range(cols):
        col = [float(z[i, d]) for i in range(rows)]
        m = sum(col) / rows
        sd = math.sqrt(sum((c - m) ** 2 for c in col) / rows)
        for i in range(rows):
            out[i][d] = (col[i] - m) / sd
    return out


def cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def student_rank_lists(scores: torch.Tensor) -> list[list[int]]:
    """1-based ranks by explicit counting (scores in these tests have no ties)."""
    B, n = scores.shape
    return [[1 + sum(1 for i in range(n) if scores[b, i] > scores[b, j]) for j in range(n)] for b in range(B)]


# --- registry -------------------------------------------------------------------------------
NAMES = ["hint", "htd", "rd", "cd", "rrd", "dcd", "unkd", "kar", "llmcf"]


def test_all_registered_with_needs():
    expect = {"hint": {"item_embeddings"}, "htd": {"item_embeddings"}, "rd": {"ranks"}, "cd": {"ranks"},
              "rrd": {"ranks"}, "dcd": {"ranks"}, "unkd": {"ranks"},
              "kar": {"item_embeddings", "generated_embeddings"}, "llmcf": {"item_embeddings", "generated_embeddings"}}
    for name in NAMES:
        cls = get_method(name)
        assert cls.name == name and set(cls.needs) == expect[name]
        assert cls.uses_teacher_at_inference == (name == "kar")


@pytest.mark.parametrize("name", NAMES)
def test_loss_is_finite_scalar_with_gradient(name):
    _ctx, student, method = build(name)
    batch = train_batch()
    scores, state = forward(student, method, batch)
    loss = method.loss(batch, scores, state, student, epoch=3) + student.rec_loss(scores, batch.target, batch.negative)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert student.item_emb.weight.grad is not None


# --- Hint -----------------------------------------------------------------------------------
def test_hint_loss_by_hand():
    ctx, student, method = build("hint", {"lambda_kd": 0.7})
    batch = train_batch((0, 1))
    z = zscore_lists(ctx.teacher.item_emb)
    items = sorted({i for row in batch.history.tolist() for i in row if i < N_ITEMS}
                   | set(batch.target.tolist()) | set(batch.negative.tolist()))
    W, bias = method.regressor.weight.detach(), method.regressor.bias.detach()
    E = student.item_emb.weight.detach()
    total = 0.0
    for i in items:
        for d in range(D_T):
            pred = sum(float(W[d, k]) * float(E[i, k]) for k in range(HIDDEN)) + float(bias[d])
            total += (pred - z[i][d]) ** 2
    expected = 0.7 * total / (len(items) * D_T)
    scores, state = forward(student, method, batch)
    assert method.loss(batch, scores, state, student, 0).item() == pytest.approx(expected, rel=1e-5)


def test_hint_moves_student_towards_teacher():
    ctx, student, method = build("hint", {"items": "all", "lambda_kd": 1.0})
    batch = train_batch()
    before = method.loss(batch, *forward(student, method, batch), student, 0).item()
    distill_only_sgd(ctx, student, method, batch, steps=150, lr=0.3)
    assert method.loss(batch, *forward(student, method, batch), student, 0).item() < 0.6 * before


# --- HTD ------------------------------------------------------------------------------------
def htd_by_loops(method, student, items, tau, lam, alpha, batch_size, seed=0):
    """HTD's loss with explicit loops: teacher vectors t = z-scored z / sqrt(d_t) (full width),
    Gumbel noise from a fresh generator seeded like the method's sampler."""
    z = zscore_lists(method.ctx.teacher.item_emb)
    d_t = len(z[0])
    T = [[x / math.sqrt(d_t) for x in z[i]] for i in items]
    S = [student.item_emb.weight[i].tolist() for i in items]
    E, K = len(items), method.k
    W, bv = method.assigner.weight.tolist(), method.assigner.bias.tolist()
    probs = []
    for e in range(E):
        logits = [sum(W[k][d] * T[e][d] for d in range(d_t)) + bv[k] for k in range(K)]
        mx = max(logits)
        ex = [math.exp(v - mx) for v in logits]
        probs.append([v / sum(ex) for v in ex])
    grp = [max(range(K), key=lambda k: probs[e][k]) for e in range(E)]
    # GA
    u = torch.rand(E, K, generator=torch.Generator().manual_seed(seed * 1000003 + 13)).tolist()
    ex_ = method.experts
    h = ex_.d_hidden
    w1, b1, w2, b2 = ex_.w1.tolist(), ex_.b1.tolist(), ex_.w2.tolist(), ex_.b2.tolist()

    def f(k, x):
        hid = [max(0.0, sum(x[i] * w1[i][k * h + j] for i in range(len(x))) + b1[k * h + j]) for j in range(h)]
        return [sum(hid[j] * w2[k * h + j][d] for j in range(h)) + b2[k][d] for d in range(d_t)]

    ga = 0.0
    for e in range(E):
        logits = [(math.log(probs[e][k] + 1e-10) - math.log(-math.log(u[e][k]))) / tau for k in range(K)]
        mx = max(logits)
        a = [math.exp(v - mx) for v in logits]
        a = [v / sum(a) for v in a]
        outs = [f(k, S[e]) for k in range(K)]
        fhat = [sum(a[k] * outs[k][d] for k in range(K)) for d in range(d_t)]
        ga += sum((T[e][d] - fhat[d]) ** 2 for d in range(d_t))
    # TD
    ent = sum((cos(S[e], S[g]) - cos(T[e], T[g])) ** 2 for e in range(E) for g in range(E)
              if grp[e] == grp[g] and cos(T[e], T[g]) > 0)
    grp_term = 0.0
    for g in sorted(set(grp)):
        mem = [e for e in range(E) if grp[e] == g]
        pt = [sum(T[e][d] for e in mem) / len(mem) for d in range(d_t)]
        ps = [sum(S[e][d] for e in mem) / len(mem) for d in range(len(S[0]))]
        grp_term += sum((cos(ps, S[e]) - cos(pt, T[e])) ** 2 for e in range(E))
    return lam * (alpha * (ent + grp_term) + (1 - alpha) * ga) / batch_size


@pytest.mark.parametrize("epoch", [0, 3])
def test_htd_loss_by_hand(epoch):
    ctx, student, method = build("htd", {"n_groups": 3, "alpha": 0.3, "lambda_kd": 2.0, "teacher_dim": 0})
    batch = train_batch((0, 1))
    items = sorted(set(batch.target.tolist()) | set(batch.negative.tolist()))
    tau = 1.0 if epoch <= 1 else 1e-10 ** ((epoch - 1) / ctx.max_epochs)
    assert method.tau(epoch) == pytest.approx(tau)
    expected = htd_by_loops(method, student, items, tau, 2.0, 0.3, 2)
    scores, state = forward(student, method, batch)
    assert method.loss(batch, scores, state, student, epoch).item() == pytest.approx(expected, rel=1e-4)


def test_htd_teacher_space_principal_directions():
    from dllm2rec.distill.htd import teacher_space

    gen = torch.Generator().manual_seed(3)
    z = torch.randn(50, 6, generator=gen) * torch.tensor([5.0, 1, 1, 3, 1, 1]) + 2
    t = teacher_space(z, 2)
    assert t.shape == (50, 2) and t.pow(2).sum(1).mean().item() == pytest.approx(1.0, rel=1e-5)
    x = torch.tensor(zscore_lists(z), dtype=torch.float64)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    ref = x @ vh[:2].T
    ref = ref / ref.pow(2).sum(1).mean().sqrt()
    for j in range(2):  # equal up to the sign of each direction
        assert min((t[:, j].double() - ref[:, j]).abs().max(), (t[:, j].double() + ref[:, j]).abs().max()) < 1e-4
    full = teacher_space(z, 0)
    assert torch.allclose(full, torch.tensor(zscore_lists(z)) / math.sqrt(6), atol=1e-5)


def test_htd_moves_student_topology_towards_teacher():
    ctx, student, method = build("htd", {"n_groups": 2, "alpha": 0.5, "lambda_kd": 1.0, "teacher_dim": 0})
    batch = Batch("train", torch.arange(6), torch.tensor(TRAIN_HIST), torch.tensor(TRAIN_LEN),
                  torch.tensor(TRAIN_TGT), torch.tensor([7, 0, 3, 6, 2, 4]))  # targets+negatives: all 8 items
    zt = F.normalize(torch.tensor(zscore_lists(ctx.teacher.item_emb)), dim=1)
    ct = zt @ zt.T
    iu = torch.triu_indices(N_ITEMS, N_ITEMS, 1)

    def corr():
        es = F.normalize(student.item_emb.weight.detach()[:N_ITEMS], dim=1)
        a, b = ct[iu[0], iu[1]], (es @ es.T)[iu[0], iu[1]]
        return torch.corrcoef(torch.stack([a, b]))[0, 1].item()

    before_loss = method.loss(batch, *forward(student, method, batch), student, 0).item()
    before = corr()
    distill_only_sgd(ctx, student, method, batch, steps=200, lr=0.02, adam=True)
    assert method.loss(batch, *forward(student, method, batch), student, 0).item() < 0.5 * before_loss
    assert corr() > before + 0.2


# --- RD -------------------------------------------------------------------------------------
@pytest.mark.parametrize("epoch", [0, 9, 10])
def test_rd_loss_by_hand(epoch):
    cfg = {"lambda_kd": 0.9, "k": 4, "lam": 2.0, "mu": 0.5}  # dynamic_start_epoch: 10 (default)
    ctx, student, method = build("rd", cfg)
    batch = train_batch()
    scores, state = forward(student, method, batch)
    S = scores.detach()
    ranks = student_rank_lists(S)
    top = ctx.teacher.splits["train"].topk_items
    total = 0.0
    for bi, row in enumerate(batch.rows.tolist()):
        listed = [int(j) for j in top[row] if int(j) != int(batch.target[bi])][:4]  # the target removed
        wa = [math.exp(-r / 2.0) for r in range(1, 5)]
        wa = [w / sum(wa) for w in wa]
        if epoch >= 10:  # hybrid, not renormalised
            w = [wa[r - 1] * math.tanh(max(0.5 * (ranks[bi][listed[r - 1]] - r), 0.0)) for r in range(1, 5)]
        else:
            w = wa
        total += -sum(w[r] * logsig(float(S[bi, listed[r]])) for r in range(4))
    expected = 0.9 * total / len(batch.rows)
    assert method.loss(batch, scores, state, student, epoch).item() == pytest.approx(expected, rel=1e-5)


def test_rd_drops_the_target_from_the_teacher_list():
    from dllm2rec.distill.rd import drop_target

    items = torch.tensor([[3, 1, 4, 0, 5], [2, 7, 1, 6, 0]])
    got = drop_target(items, torch.tensor([4, 5]), 3)
    assert got.tolist() == [[3, 1, 0], [2, 7, 1]]


def test_rd_moves_student_towards_teacher():
    from dllm2rec.distill.rd import drop_target

    ctx, student, method = build("rd", {"k": 3, "dynamic_start_epoch": 0})
    batch = train_batch()
    first = drop_target(ctx.teacher.splits["train"].topk_items[batch.rows], batch.target, 1).flatten()

    def mean_rank():  # the student's mean 1-based rank of the teacher's first non-target item
        with torch.no_grad():
            s = forward(student, method, batch)[0]
        return sum(1 + int((s[b] > s[b, first[b]]).sum()) for b in range(len(first))) / len(first)

    before = mean_rank()
    distill_only_sgd(ctx, student, method, batch, steps=80, lr=1.0, epoch=1)
    after = mean_rank()
    assert after < before and after <= 2.0


# --- CD -------------------------------------------------------------------------------------
def test_cd_loss_by_hand():
    ctx, student, method = build("cd", {"lambda_kd": 0.8, "n_samples": TOPN, "t1": 2.0, "t2": 0.5})
    batch = train_batch()
    scores, state = forward(student, method, batch)
    sp = ctx.teacher.splits["train"]
    all_d = [float(x) for x in sp.topk_dist.reshape(-1)]
    med, sd = statistics.median(all_d), statistics.pstdev(all_d)
    items, _dist = method.sample(batch, scores.device)
    # n_samples = list length: every listed item is drawn once
    for bi, row in enumerate(batch.rows.tolist()):
        assert sorted(items[bi].tolist()) == sorted(sp.topk_items[row].tolist())
    total, cnt = 0.0, 0
    for bi, row in enumerate(batch.rows.tolist()):
        for r in range(TOPN):
            q = sig(((med - float(sp.topk_dist[row, r])) / sd + 0.5) / 2.0)
            y = float(scores.detach()[bi, int(sp.topk_items[row, r])])
            total += -(q * logsig(y) + (1 - q) * logsig(-y))
            cnt += 1
    assert method.loss(batch, scores, state, student, 0).item() == pytest.approx(0.8 * total / cnt, rel=1e-5)


def test_cd_samples_follow_rank_and_move_student():
    ctx, student, method = build("cd", {"n_samples": 1, "rank_temp": 1.0})
    batch = train_batch()
    sp = ctx.teacher.splits["train"]
    first = 0
    for _ in range(200):
        items, _ = method.sample(batch, "cpu")
        first += int((items[:, 0] == sp.topk_items[batch.rows, 0]).sum())
    # p(rank 1) = 1/Σ_r e^{-(r-1)} ≈ 0.64 over 800 draws
    assert 0.55 < first / 800 < 0.73
    ctx, student, method = build("cd", {"n_samples": 2, "rank_temp": 1.0, "t2": 3.0})
    before = mean_teacher_top1_rank(ctx, student, method, batch)
    distill_only_sgd(ctx, student, method, batch, steps=80, lr=1.0)
    assert mean_teacher_top1_rank(ctx, student, method, batch) < before


# --- RRD ------------------------------------------------------------------------------------
def rrd_by_loops(pos, neg):
    """-Σ_k log( e^{p_k} / (Σ_{i>=k} e^{p_i} + Σ_l e^{n_l}) ) for plain lists."""
    total = 0.0
    for k in range(len(pos)):
        den = sum(math.exp(p) for p in pos[k:]) + sum(math.exp(x) for x in neg)
        total += -(pos[k] - math.log(den))
    return total


def test_relaxed_ranking_loss_with_masks_by_hand():
    from dllm2rec.distill.rrd import relaxed_ranking_loss

    pos = torch.tensor([[1.0, -0.5, 2.0], [0.3, 0.1, -1.0]])
    pv = torch.tensor([[True, False, True], [True, True, True]])
    neg = torch.tensor([[0.2, 1.5], [-0.7, 0.4]])
    nv = torch.tensor([[True, True], [False, True]])
    got = relaxed_ranking_loss(pos, pv, neg, nv)
    assert got[0].item() == pytest.approx(rrd_by_loops([1.0, 2.0], [0.2, 1.5]), rel=1e-5)
    assert got[1].item() == pytest.approx(rrd_by_loops([0.3, 0.1, -1.0], [0.4]), rel=1e-5)


def test_rrd_loss_by_hand():
    # K = N and L = n: every listed item is interesting (teacher order), every item that is
    # neither listed nor in the history nor the target is uninteresting
    ctx, student, method = build("rrd", {"lambda_kd": 0.05, "k": TOPN, "l": N_ITEMS})
    batch = train_batch()
    scores, state = forward(student, method, batch)
    sp = ctx.teacher.splits["train"]
    interesting, unint, valid = method.sample(batch, "cpu", N_ITEMS)
    total = 0.0
    for bi, row in enumerate(batch.rows.tolist()):
        listed = sp.topk_items[row].tolist()
        assert interesting[bi].tolist() == listed
        seen = set(batch.history[bi].tolist()) | {int(batch.target[bi])}
        rest = [j for j in range(N_ITEMS) if j not in listed and j not in seen]
        assert sorted(j for j, v in zip(unint[bi].tolist(), valid[bi].tolist()) if v) == rest
        total += rrd_by_loops([float(scores.detach()[bi, j]) for j in listed], [float(scores.detach()[bi, j]) for j in rest])
    assert method.loss(batch, scores, state, student, 0).item() == pytest.approx(0.05 * total / 4, rel=1e-5)


def test_rrd_rank_sampling_distribution():
    from dllm2rec.distill.rrd import rank_sample

    gen = torch.Generator().manual_seed(0)
    draws = rank_sample(20000, 5, 1, 2.0, gen, "cpu").flatten()
    freq = torch.bincount(draws, minlength=5).double() / draws.numel()
    p = torch.softmax(-torch.arange(1, 6, dtype=torch.float64) / 2.0, 0)
    assert (freq - p).abs().max() < 0.015


def test_rrd_sampling_and_learning():
    ctx, student, method = build("rrd", {"k": 2, "l": 2, "temp": 1.0})
    batch = train_batch()
    sp = ctx.teacher.splits["train"]
    for _ in range(20):
        interesting, unint, valid = method.sample(batch, "cpu", N_ITEMS)
        for bi, row in enumerate(batch.rows.tolist()):
            listed = sp.topk_items[row].tolist()
            pos = [listed.index(j) for j in interesting[bi].tolist()]
            assert pos == sorted(pos)  # teacher order
            seen = set(batch.history[bi].tolist()) | {int(batch.target[bi])}
            assert not {j for j, v in zip(unint[bi].tolist(), valid[bi].tolist()) if v} & (set(listed) | seen)
    before = mean_teacher_top1_rank(ctx, student, method, batch)
    distill_only_sgd(ctx, student, method, batch, steps=80, lr=1.0)
    assert mean_teacher_top1_rank(ctx, student, method, batch) < before


# --- DCD ------------------------------------------------------------------------------------
def within_ranks_by_loops(vals):
    """0-based rank of each entry of ``vals`` by descending value (no ties in these tests)."""
    return [sum(1 for w in vals if w > v) for v in vals]


def test_dcd_loss_by_hand():
    eps, lu, li = 0.4, 0.3, 0.2
    ctx, student, method = build("dcd", {"lambda_user": lu, "lambda_item": li, "n_samples": TOPN, "eps": eps,
                                         "top_n": TOPN})
    batch = train_batch()
    scores, state = forward(student, method, batch)
    every = Batch("train", torch.arange(6), torch.tensor(TRAIN_HIST), torch.tensor(TRAIN_LEN), torch.tensor(TRAIN_TGT))
    with torch.no_grad():
        S_all = forward(student, method, every)[0]  # the refresh's scores (no dropout in TinyStudent)
    S = scores.detach()
    sp = ctx.teacher.splits["train"]
    user = 0.0
    for bi, row in enumerate(batch.rows.tolist()):
        listed = sp.topk_items[row].tolist()
        rs = within_ranks_by_loops([float(S_all[row, j]) for j in listed])
        up = [listed[r] for r in range(TOPN) if math.tanh(max(eps * (rs[r] - r), 0)) > 0]  # teacher order
        down = [listed[r] for r in range(TOPN) if math.tanh(max(eps * (r - rs[r]), 0)) > 0]
        if up:
            user += rrd_by_loops([float(S[bi, j]) for j in up], [float(S[bi, j]) for j in down])
    item = 0.0
    W, b = student.out.weight.detach(), student.out.bias.detach()
    h_all = student.encode(every.history, every.lengths).detach()
    for i in sorted(set(batch.target.tolist())):
        entries = sorted((float(sp.topk_dist[s, p]), s) for s in range(6) for p in range(TOPN) if int(sp.topk_items[s, p]) == i)
        seqs = [s for _, s in entries]
        rs = within_ranks_by_loops([float(S_all[s, i]) for s in seqs])
        score = {s: float(h_all[s] @ W[i] + b[i]) for s in seqs}
        up = [seqs[r] for r in range(len(seqs)) if math.tanh(max(eps * (rs[r] - r), 0)) > 0]
        down = [seqs[r] for r in range(len(seqs)) if math.tanh(max(eps * (r - rs[r]), 0)) > 0]
        if up:
            item += rrd_by_loops([score[s] for s in up], [score[s] for s in down])
    expected = (lu * user + li * item) / 4
    assert method.loss(batch, scores, state, student, 0).item() == pytest.approx(expected, rel=1e-5)


def test_dcd_refreshes_every_few_epochs_and_checkpoints_its_cache():
    ctx, student, method = build("dcd", {"refresh_every": 3})
    batch = train_batch()
    opt = torch.optim.SGD(student.parameters(), lr=1.0)
    seen = []
    for epoch in range(5):
        loss = method.loss(batch, *forward(student, method, batch), student, epoch)
        seen.append(method.user_rs.clone())
        opt.zero_grad()
        (loss * 100 + student.item_emb.weight.pow(2).sum()).backward()  # move the student
        opt.step()
    assert method.refreshed_at == 3
    assert torch.equal(seen[0], seen[1]) and torch.equal(seen[1], seen[2]) and torch.equal(seen[3], seen[4])
    state = method.rng_state()
    _c, _s, other = build("dcd", {"refresh_every": 3})
    other.set_rng_state(state)
    assert other.refreshed_at == 3 and torch.equal(other.user_rs, method.user_rs)
    assert torch.equal(other.states, method.states) and torch.equal(other.item_rs, method.item_rs)


def test_dcd_reduces_rank_discrepancy():
    ctx, student, method = build("dcd", {"n_samples": 3, "eps": 0.5, "refresh_every": 1,
                                         "lambda_user": 1.0, "lambda_item": 1.0})
    batch = train_batch()
    sp = ctx.teacher.splits["train"]

    def discrepancy():
        with torch.no_grad():
            s = forward(student, method, batch)[0]
        total = 0
        for bi, row in enumerate(batch.rows.tolist()):
            rs = within_ranks_by_loops([float(s[bi, j]) for j in sp.topk_items[row].tolist()])
            total += sum(abs(rs[r] - r) for r in range(TOPN))
        return total

    before = discrepancy()
    opt = torch.optim.SGD(student.parameters(), lr=1.0)
    for step in range(60):
        loss = method.loss(batch, *forward(student, method, batch), student, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert discrepancy() < before


# --- UnKD -----------------------------------------------------------------------------------
def test_unkd_popularity_groups_by_hand():
    from dllm2rec.distill.unkd import pairs_per_group, popularity_groups

    counts = torch.tensor([1, 10, 0, 5, 3, 1, 0, 20])
    # by count: 7(20) 1(10) 3(5) 4(3) 0(1) 5(1); total 40.
    # G=2 (40/2 = 20): 7 -> 20 (not above); +1 -> 30 > 20: [7] closes, 1 starts; 1,3,4,0,5 -> 20.
    assert popularity_groups(counts, 2).tolist() == [1, 1, -1, 1, 1, 1, -1, 0]
    # G=4 (10): 7 alone above 10 -> [7]; 1 -> 10; +3 -> 15: [1] closes; 3,4,0,5 -> 10 > 10/2 kept.
    assert popularity_groups(counts, 4).tolist() == [2, 1, -1, 2, 2, 2, -1, 0]
    # a small last group joins the previous one: G=2 on [10, 10, 1] -> [0], [1, 2]
    assert popularity_groups(torch.tensor([10, 10, 1]), 2).tolist() == [0, 1, 1]
    assert pairs_per_group(4, 30) == [8, 8, 8, 8]
    assert pairs_per_group(3, 30) == [10, 10, 10]
    assert pairs_per_group(4, 10) == [3, 3, 2, 2]


def test_unkd_sampling_and_loss_by_hand():
    ctx, student, method = build("unkd", {"lambda_kd": 0.6, "n_groups": 4, "n_samples": 8, "temp": 2.0})
    assert method.groups.tolist() == [0, 1, 2, 3, 3, 3, 3, -1]  # counts 10, 8, 6, 3, 3, 2, 1, 0
    batch = train_batch()
    scores, _state = forward(student, method, batch)
    sp = ctx.teacher.splits["train"]
    grp = method.groups.tolist()
    for _ in range(10):
        pos, neg, valid = method.sample(batch, "cpu")
        assert pos.shape == (4, sum(method.n_pairs))
        total, cnt = 0.0, 0
        for bi, row in enumerate(batch.rows.tolist()):
            listed = sp.topk_items[row].tolist()
            seen = set(batch.history[bi].tolist()) | {int(batch.target[bi])}
            for i, j, v in zip(pos[bi].tolist(), neg[bi].tolist(), valid[bi].tolist()):
                if not v:
                    continue
                assert grp[i] == grp[j] >= 0 and i != j and i not in seen and j not in seen
                assert i in listed  # the better of a pair is always a listed candidate
                assert j not in listed or listed.index(i) < listed.index(j)
                total += -logsig(float(scores.detach()[bi, i]) - float(scores.detach()[bi, j]))
                cnt += 1
        if cnt:
            got = method.loss_from_samples(scores, pos, neg, valid).item()
            assert got == pytest.approx(0.6 * total / cnt, rel=1e-5)
    # group 3 ({3,4,5,6}) of row 0 (history {0,1}, target 2): 3 listed or not, pairs are drawn
    assert valid.any()


def test_unkd_learns_within_group_order():
    ctx, student, method = build("unkd", {"n_groups": 2, "n_samples": 8, "temp": 1.0})
    batch = train_batch()
    sp = ctx.teacher.splits["train"]
    grp = method.groups.tolist()

    def margin():
        with torch.no_grad():
            s = forward(student, method, batch)[0]
        m = 0.0
        for bi, row in enumerate(batch.rows.tolist()):
            seen = set(batch.history[bi].tolist()) | {int(batch.target[bi])}
            listed = [j for j in sp.topk_items[row].tolist() if j not in seen]
            for g in set(grp) - {-1}:
                a = [j for j in listed if grp[j] == g]
                b = [j for j in range(N_ITEMS) if grp[j] == g and j not in listed and j not in seen]
                if a and b:
                    m += float(s[bi, a].mean() - s[bi, b].mean())
        return m

    before = margin()
    distill_only_sgd(ctx, student, method, batch, steps=60, lr=1.0)
    assert margin() > before + 1.0


# --- KAR ------------------------------------------------------------------------------------
def test_kar_adaptor_and_features_by_hand():
    ctx, student, method = build("kar", {"n_shared": 1, "n_specific": 2, "expert_hidden": 3})
    method.eval()
    ad = method.adaptor
    z = zscore_lists(ctx.teacher.item_emb)

    def hea(x, domain):
        experts = list(ad.shared) + list(ad.specific[domain])
        gate_w, gate_b = ad.gate[domain].weight, ad.gate[domain].bias
        logits = [sum(float(gate_w[e, d]) * x[d] for d in range(D_T)) + float(gate_b[e]) for e in range(len(experts))]
        mx = max(logits)
        g = [math.exp(v - mx) for v in logits]
        g = [v / sum(g) for v in g]
        out = [0.0] * HIDDEN
        for e, ex in enumerate(experts):
            l1, l2 = ex.net[0], ex.net[3]
            hid = [max(0.0, sum(float(l1.weight[h, d]) * x[d] for d in range(D_T)) + float(l1.bias[h])) for h in range(3)]
            o = [sum(float(l2.weight[k, h]) * hid[h] for h in range(3)) + float(l2.bias[k]) for k in range(HIDDEN)]
            out = [a + g[e] * b for a, b in zip(out, o)]
        return out

    with torch.no_grad():
        table = method.item_table(student)
        base = student.item_emb.weight
        for i in (0, 5):
            assert table[i].tolist() == pytest.approx([float(base[i, k]) + v for k, v in enumerate(hea(z[i], "item"))], rel=1e-4, abs=1e-5)
        assert torch.equal(table[N_ITEMS], base[N_ITEMS])
        # training-time table: only the history's rows are needed and they match the full table
        hist = torch.tensor([[0, 5, 8]])
        part = method.item_table_for(student, hist)
        assert torch.allclose(part[[0, 5]], table[[0, 5]], atol=1e-6)
        # sequence side: valid row 1's generated embedding, standardised with the item table's stats
        raw = ctx.teacher.item_emb
        g = ctx.teacher.splits["valid"].gen_emb[1].float()
        gz = [(float(g[d]) - float(raw[:, d].mean())) / float(raw[:, d].std(unbiased=False)) for d in range(D_T)]
        vb = Batch("valid", torch.tensor([1]), torch.tensor([VALID_HIST[1]]), torch.tensor([VALID_LEN[1]]), torch.tensor([VALID_TGT[1]]))
        state = torch.zeros(1, HIDDEN)
        assert method.adjust_state(state, vb)[0].tolist() == pytest.approx(hea(gz, "seq"), rel=1e-4, abs=1e-5)


def test_kar_student_learns_from_generated_knowledge():
    """Targets are random given the history but the teacher's generation names the target:
    a student with KAR's sequence knowledge fits unseen sequences, the plain one cannot."""
    gen = torch.Generator().manual_seed(7)
    n, S, V = 8, 96, 64
    item_emb = torch.randn(n, D_T, generator=gen)

    def split(s):
        tgt = torch.randint(0, n, (s,), generator=gen)
        hist = torch.randint(0, n, (s, L), generator=gen)
        ge = (item_emb[tgt] + 0.05 * torch.randn(s, D_T, generator=gen)).half()
        ts = TeacherSplit(torch.zeros(s, 0, dtype=torch.long), torch.zeros(s, 0), torch.zeros(s), ge)
        return hist, tgt, ts

    th, tt, tsp = split(S)
    vh, vt, vsp = split(V)
    ctx = DistillContext(n_items=n, hidden=HIDDEN, teacher=TeacherTensors(item_emb, {"train": tsp, "valid": vsp}),
                         item_counts=torch.bincount(tt, minlength=n), train_history=th,
                         train_lengths=torch.full((S,), L), train_target=tt, seed=0)

    def fit_and_hr(name):
        torch.manual_seed(0)
        student = TinyStudent(n, hidden=HIDDEN, dropout=0.0)
        opts = {"n_shared": 1, "n_specific": 1, "expert_hidden": 16} if name == "kar" else {}
        method = get_method(name)({"type": name, **opts}, ctx, student)
        opt = torch.optim.Adam(list(student.parameters()) + list(method.parameters()), lr=0.03)
        batch = Batch("train", torch.arange(S), th, torch.full((S,), L), tt, (tt + 1) % n)
        for _ in range(150):
            scores, _ = forward(student, method, batch)
            loss = F.cross_entropy(scores, tt)
            opt.zero_grad()
            loss.backward()
            opt.step()
        method.eval()
        with torch.no_grad():
            vb = Batch("valid", torch.arange(V), vh, torch.full((V,), L), vt)
            table = method.item_table(student)
            s = student.scores(method.adjust_state(student.encode(vh, vb.lengths, table), vb))
        return (s.argmax(1) == vt).float().mean().item()

    assert fit_and_hr("kar") > 0.7
    assert fit_and_hr("none") < 0.4


# --- LLM-CF ---------------------------------------------------------------------------------
def llmcf_ctx():
    """Train rows 0..5; row 1 is the same user's next window after row 0 (holds bigram 3->4)."""
    hist = torch.tensor([[1, 2, 3], [2, 3, 4], [1, 2, 8], [5, 6, 7], [1, 2, 3], [6, 7, 8]])
    lens = torch.tensor([3, 3, 2, 3, 3, 2])
    tgt = torch.tensor([4, 0, 3, 0, 5, 5])
    gen = torch.Generator().manual_seed(3)
    s = hist.shape[0]
    ts = TeacherSplit(torch.zeros(s, 0, dtype=torch.long), torch.zeros(s, 0), torch.zeros(s),
                      torch.randn(s, D_T, generator=gen).half())
    item_emb = torch.randn(N_ITEMS, D_T, generator=gen)
    return DistillContext(n_items=N_ITEMS, hidden=HIDDEN, teacher=TeacherTensors(item_emb, {"train": ts}),
                          item_counts=torch.ones(N_ITEMS, dtype=torch.long), train_history=hist,
                          train_lengths=lens, train_target=tgt, seed=0)


def test_llmcf_retrieval_by_hand_excludes_self_and_same_user_window():
    ctx = llmcf_ctx()
    R = 2
    method = get_method("llmcf")({"type": "llmcf", "n_neighbors": R, "retrieval_dim": 64}, ctx, TinyStudent(N_ITEMS, HIDDEN))
    z = zscore_lists(ctx.teacher.item_emb)  # d_t = 6 < retrieval_dim: no PCA

    def signature(h):
        real = [i for i in h if i < N_ITEMS]
        return [sum(z[i][d] for i in real) / len(real) for d in range(D_T)]

    hist = ctx.train_history.tolist()
    sigs = [signature(h) for h in hist]
    for q in range(len(hist)):
        last = [i for i in hist[q] if i < N_ITEMS][-1]
        tgt = int(ctx.train_target[q])
        allowed = [c for c in range(len(hist)) if c != q
                   and not any(hist[c][p] == last and hist[c][p + 1] == tgt for p in range(L - 1))]
        got = method.train_nbr[q].tolist()
        assert len(set(got)) == R and set(got) <= set(allowed)
        # the R most similar allowed rows (compared by similarity: rows 0 and 4 share a history)
        want_sims = sorted((cos(sigs[q], sigs[c]) for c in allowed), reverse=True)[:R]
        assert sorted((cos(sigs[q], sigs[c]) for c in got), reverse=True) == pytest.approx(want_sims, abs=1e-5)
        assert method.train_nbr_valid[q].all()
    # row 0 (1,2,3 -> 4) must not see row 1 (2,3,4: the same user's next window) nor itself
    assert 0 not in method.train_nbr[0].tolist() and 1 not in method.train_nbr[0].tolist()
    assert 4 in method.train_nbr[0].tolist()  # identical history, different row: allowed
    # a valid/test query ranks all train rows by the same cosine, no exclusions
    vb = Batch("valid", torch.tensor([0]), torch.tensor([[2, 3, 4]]), torch.tensor([3]), torch.tensor([0]))
    nbr, valid = method.neighbors(vb)
    qs = signature([2, 3, 4])
    want_sims = sorted((cos(qs, s) for s in sigs), reverse=True)[:R]
    assert [cos(qs, sigs[c]) for c in nbr[0].tolist()] == pytest.approx(want_sims, abs=1e-5) and valid.all()


def test_llmcf_adjust_state_by_hand_and_gradient():
    ctx = llmcf_ctx()
    student = TinyStudent(N_ITEMS, HIDDEN)
    method = get_method("llmcf")({"type": "llmcf", "n_neighbors": 2}, ctx, student)
    raw = ctx.teacher.item_emb
    bank = ctx.teacher.splits["train"].gen_emb.float()
    mean = [float(raw[:, d].mean()) for d in range(D_T)]
    std = [float(raw[:, d].std(unbiased=False)) for d in range(D_T)]
    batch = Batch("train", torch.tensor([0, 3]), ctx.train_history[[0, 3]], ctx.train_lengths[[0, 3]], ctx.train_target[[0, 3]])
    state = torch.randn(2, HIDDEN, generator=torch.Generator().manual_seed(0), requires_grad=True)
    out = method.adjust_state(state, batch)

    def lin(layer, x):
        W = layer.weight.detach()
        b = layer.bias.detach() if layer.bias is not None else torch.zeros(W.shape[0])
        return [sum(float(W[o, k]) * x[k] for k in range(len(x))) + float(b[o]) for o in range(W.shape[0])]

    for bi, row in enumerate([0, 3]):
        h = state[bi].tolist()
        q = lin(method.w_q, h)
        us = [lin(method.w_u, [(float(bank[c, d]) - mean[d]) / std[d] for d in range(D_T)]) for c in method.train_nbr[row].tolist()]
        logits = [sum(a * b for a, b in zip(q, lin(method.w_k, u))) / math.sqrt(HIDDEN) for u in us]
        mx = max(logits)
        a = [math.exp(v - mx) for v in logits]
        a = [v / sum(a) for v in a]
        vs = [lin(method.w_v, u) for u in us]
        ctxv = [sum(a[r] * vs[r][k] for r in range(len(us))) for k in range(HIDDEN)]
        want = [x + y for x, y in zip(h, lin(method.w_o, ctxv))]
        assert out[bi].tolist() == pytest.approx(want, rel=1e-4, abs=1e-5)
    out.sum().backward()
    assert method.w_u.weight.grad is not None and method.w_u.weight.grad.abs().sum() > 0
