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
from dllm2rec.io import UserError
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


D_K = 5  # width of KAR's knowledge vectors (the text encoder's)


def make_ctx(seed: int = 0) -> DistillContext:
    gen = torch.Generator().manual_seed(1234)
    teacher = TeacherTensors(
        item_emb=torch.randn(N_ITEMS, D_T, generator=gen) * 3 + 1,
        splits={"train": make_split(len(TRAIN_HIST), gen), "valid": make_split(len(VALID_HIST), gen)},
    )
    # KAR's knowledge: per item, and per sequence its user's (dllm2rec/teacher/knowledge.py)
    teacher.knowledge_item_emb = torch.nn.functional.normalize(torch.randn(N_ITEMS, D_K, generator=gen), dim=1)
    for sp in teacher.splits.values():
        sp.knowledge_user_emb = torch.nn.functional.normalize(torch.randn(sp.topk_items.shape[0], D_K, generator=gen), dim=1)
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
    return method.scores(student, state, batch), state


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
              "kar": {"knowledge_item_embeddings", "knowledge_user_embeddings"}, "llmcf": {"item_embeddings", "generated_embeddings"}}
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
def cd_candidates(ctx, row):
    """The teacher's list of a train row without the row's history and target, in list order."""
    sp = ctx.teacher.splits["train"]
    seen = {i for i in TRAIN_HIST[row] if i < N_ITEMS} | {TRAIN_TGT[row]}
    return [(r, int(sp.topk_items[row, r])) for r in range(TOPN) if int(sp.topk_items[row, r]) not in seen]


def test_cd_loss_by_hand():
    ctx, student, method = build("cd", {"lambda_kd": 0.8, "n_samples": TOPN, "t1": 2.0, "t2": 0.5})
    batch = train_batch()
    scores, state = forward(student, method, batch)
    sp = ctx.teacher.splits["train"]
    all_d = [float(x) for x in sp.topk_dist.reshape(-1)]
    med, sd = statistics.median(all_d), statistics.pstdev(all_d)
    per_row = []
    for bi, row in enumerate(batch.rows.tolist()):
        cands = cd_candidates(ctx, row)
        # n_samples >= list length: every candidate is drawn once, history and target never
        got = [int(i) for i, ok in zip(method.samples[row], method.sample_valid[row]) if ok]
        assert sorted(got) == sorted(i for _, i in cands)
        losses = []
        for r, item in cands:
            q = sig(((med - float(sp.topk_dist[row, r])) / sd + 0.5) / 2.0)
            y = float(scores.detach()[bi, item])
            losses.append(-(q * logsig(y) + (1 - q) * logsig(-y)))
        per_row.append(sum(losses) / len(losses))
    assert method.loss(batch, scores, state, student, 0).item() == pytest.approx(0.8 * sum(per_row) / len(per_row), rel=1e-5)


def test_cd_tournament_probabilities_by_enumeration():
    from dllm2rec.distill.cd import tournament_weights

    valid = torch.tensor([[True, False, True, True, True], [True, True, False, False, True]])
    lam, n = 3.0, 5
    got = tournament_weights(valid, lam, n)
    for b in range(2):
        cols = [c for c in range(5) if valid[b, c]]
        p = [math.exp(-lam * (k + 1) / n) for k in range(len(cols))]
        p = [x / sum(p) for x in p]
        # two i.i.d. draws, the better-ranked (smaller position) wins
        want = [0.0] * len(cols)
        for i in range(len(cols)):
            for j in range(len(cols)):
                want[min(i, j)] += p[i] * p[j]
        assert [float(got[b, c]) for c in cols] == pytest.approx(want, abs=1e-6)
        assert all(float(got[b, c]) == 0.0 for c in range(5) if not valid[b, c])


def test_cd_defaults_and_student_moves_to_soft_labels():
    # the defaults of the re-implementation: t1 = 2, t2 = 0, 50 samples, lam = 1/20
    ctx, student, method = build("cd")
    assert (method.opt.t1, method.opt.t2, method.opt.n_samples, method.opt.lam) == (2.0, 0.0, 50, 0.05)
    # learning: the student's probabilities approach the soft labels of the sampled items
    ctx, student, method = build("cd", {"t2": 1.0})
    batch = train_batch()

    def gap():
        with torch.no_grad():
            scores, _ = forward(student, method, batch)
        rows = batch.rows
        q = method.soft_labels(method.sample_score[rows])
        p = torch.sigmoid(scores.gather(1, method.samples[rows]))
        ok = method.sample_valid[rows]
        return float((p - q).abs()[ok].mean())

    before = gap()
    distill_only_sgd(ctx, student, method, batch, steps=150, lr=1.0)
    assert gap() < 0.5 * before


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
def kar_hea_by_loops(ad, x, domain, d_in, d_hidden, d_out):
    """HEA_d(x) with explicit loops: softmax gate over shared + specific experts, every expert
    Linear-ReLU-Linear-ReLU (KAR's MLP ends with ReLU)."""
    experts = list(ad.shared) + list(ad.specific[domain])
    gate_w, gate_b = ad.gate[domain].weight.detach(), ad.gate[domain].bias.detach()
    logits = [sum(float(gate_w[e, d]) * x[d] for d in range(d_in)) + float(gate_b[e]) for e in range(len(experts))]
    mx = max(logits)
    g = [math.exp(v - mx) for v in logits]
    g = [v / sum(g) for v in g]
    out = [0.0] * d_out
    for e, ex in enumerate(experts):
        l1, l2 = ex.net[0], ex.net[3]
        w1, b1, w2, b2 = (t.detach() for t in (l1.weight, l1.bias, l2.weight, l2.bias))
        hid = [max(0.0, sum(float(w1[h, d]) * x[d] for d in range(d_in)) + float(b1[h])) for h in range(d_hidden)]
        o = [max(0.0, sum(float(w2[k, h]) * hid[h] for h in range(d_hidden)) + float(b2[k])) for k in range(d_out)]
        out = [a + g[e] * b for a, b in zip(out, o)]
    return out


def test_kar_features_and_scores_by_hand():
    ctx, student, method = build("kar", {"n_shared": 1, "n_specific": 2, "expert_hidden": 3})
    assert isinstance(method.adaptor.shared[0].net[-2], torch.nn.ReLU)
    ad = method.adaptor
    z = ctx.teacher.knowledge_item_emb.tolist()  # the text encoder's vectors, as given
    hea_items = [kar_hea_by_loops(ad, z[i], "item", D_K, 3, HIDDEN) for i in range(N_ITEMS)]

    def user_vec(split, row):
        return kar_hea_by_loops(ad, ctx.teacher.splits[split].knowledge_user_emb[row].tolist(), "user", D_K, 3, HIDDEN)

    def out_layer(h):
        W, b = student.out.weight.detach(), student.out.bias.detach()
        return [sum(float(W[i, k]) * h[k] for k in range(HIDDEN)) + float(b[i]) for i in range(N_ITEMS)]

    # evaluation: every item's score gets h' . HEA_item(z_i)
    method.eval()
    student.eval()
    vb = Batch("valid", torch.tensor([1]), torch.tensor([VALID_HIST[1]]), torch.tensor([VALID_LEN[1]]), torch.tensor([VALID_TGT[1]]))
    state = torch.randn(1, HIDDEN, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        h1 = method.adjust_state(state, vb)
        s = method.scores(student, h1, vb)
    want_h = [float(state[0, k]) + v for k, v in enumerate(user_vec("valid", 1))]
    assert h1[0].tolist() == pytest.approx(want_h, rel=1e-4, abs=1e-5)
    want = [o + sum(a * b for a, b in zip(want_h, hea_items[i])) for i, o in enumerate(out_layer(want_h))]
    assert s[0].tolist() == pytest.approx(want, rel=1e-4, abs=1e-5)
    # training: the term is added to the columns the loss reads (target, negative), the same values
    method.train()
    student.train()
    batch = train_batch((0, 1))
    h = method.adjust_state(torch.randn(2, HIDDEN, generator=torch.Generator().manual_seed(6)), batch)
    st = method.scores(student, h, batch)
    hl = h.detach().tolist()
    for b in range(2):
        plain = out_layer(hl[b])
        cols = set(batch.target.tolist()) | set(batch.negative.tolist())
        for i in range(N_ITEMS):
            extra = sum(a * c for a, c in zip(hl[b], hea_items[i])) if i in cols else 0.0
            assert float(st[b, i].detach()) == pytest.approx(plain[i] + extra, rel=1e-4, abs=1e-5)
    # the input table is the student's own (history items get no knowledge vector, as in KAR)
    assert method.item_table_for(student, batch.history) is student.item_emb.weight
    st.sum().backward()
    assert ad.specific["item"][0].net[0].weight.grad is not None and ad.gate["user"].weight.grad is not None


def kar_world(n_train_targets: int):
    """Random histories; the user's knowledge vector names the target (the target item's knowledge
    vector plus noise). Train targets use the first ``n_train_targets`` items only."""
    gen = torch.Generator().manual_seed(7)
    n, S, V = 8, 96, 64
    item_emb = torch.randn(n, D_T, generator=gen)

    def split(s, lo, hi):
        tgt = torch.randint(lo, hi, (s,), generator=gen)
        hist = torch.randint(0, n, (s, L), generator=gen)
        ts = TeacherSplit(torch.zeros(s, 0, dtype=torch.long), torch.zeros(s, 0), torch.zeros(s))
        ts.knowledge_user_emb = item_emb[tgt] + 0.05 * torch.randn(s, D_T, generator=gen)
        return hist, tgt, ts

    th, tt, tsp = split(S, 0, n_train_targets)
    vh, vt, vsp = split(V, 0, n)
    ctx = DistillContext(n_items=n, hidden=HIDDEN, teacher=TeacherTensors(torch.zeros(0, 0), {"train": tsp, "valid": vsp},
                                                                          knowledge_item_emb=item_emb),
                         item_counts=torch.bincount(tt, minlength=n), train_history=th,
                         train_lengths=torch.full((S,), L), train_target=tt, seed=0)
    return ctx, (th, tt), (vh, vt)


def kar_fit_and_hr(ctx, train, valid, name, opts=None, steps=150, n_seen=None):
    """Valid HR@1 after fitting; negatives are drawn among the first ``n_seen`` items (all)."""
    (th, tt), (vh, vt) = train, valid
    n, S, V = ctx.n_items, len(tt), len(vt)
    torch.manual_seed(0)
    student = TinyStudent(n, hidden=HIDDEN, dropout=0.0)
    method = get_method(name)({"type": name, **(opts or {})}, ctx, student)
    opt = torch.optim.Adam(list(student.parameters()) + list(method.parameters()), lr=0.03)
    gen = torch.Generator().manual_seed(1)
    n_seen = n if n_seen is None else n_seen
    for _ in range(steps):
        neg = (tt + torch.randint(1, n_seen, (S,), generator=gen)) % n_seen
        batch = Batch("train", torch.arange(S), th, torch.full((S,), L), tt, neg)
        scores, _ = forward(student, method, batch)
        loss = student.rec_loss(scores, tt, neg)
        opt.zero_grad()
        loss.backward()
        opt.step()
    method.eval()
    with torch.no_grad():
        vb = Batch("valid", torch.arange(V), vh, torch.full((V,), L), vt)
        state = method.adjust_state(student.encode(vh, vb.lengths, method.item_table(student)), vb)
        s = method.scores(student, state, vb)
    return (s.argmax(1) == vt).float().mean().item()


def test_kar_student_learns_from_user_knowledge():
    """Targets are random given the history but the user's knowledge names the target: a student
    with KAR's knowledge fits unseen sequences, the plain one cannot."""
    ctx, train, valid = kar_world(8)
    opts = {"n_shared": 1, "n_specific": 1, "expert_hidden": 16}
    assert kar_fit_and_hr(ctx, train, valid, "kar", opts) > 0.7
    assert kar_fit_and_hr(ctx, train, valid, "none") < 0.4


def test_kar_item_knowledge_reaches_the_score():
    """Changing one item's knowledge vector changes that item's score for every sequence, and
    no other score; without ``augment_items`` it changes nothing."""
    for augment, changed in ((True, True), (False, False)):
        ctx, student, method = build("kar", {"augment_items": augment})
        method.eval()
        vb = Batch("valid", torch.tensor([0, 1]), torch.tensor(VALID_HIST), torch.tensor(VALID_LEN), torch.tensor(VALID_TGT))

        def eval_scores():
            with torch.no_grad():
                state = method.adjust_state(student.encode(vb.history, vb.lengths, method.item_table(student)), vb)
                return method.scores(student, state, vb)

        before = eval_scores()
        method.k_items[6] += 3.0
        method.train()  # drops the cached item vectors
        method.eval()
        diff = (eval_scores() - before).abs()
        assert bool((diff[:, 6] > 1e-6).all()) == changed
        assert float(diff[:, [i for i in range(N_ITEMS) if i != 6]].max()) == 0.0


def test_kar_reads_the_knowledge_vectors_as_given():
    from dllm2rec.distill.spec import parse_options

    assert parse_options({"type": "kar"}).teacher_parts() == {"knowledge_item_embeddings", "knowledge_user_embeddings"}
    ctx = make_ctx()
    student = TinyStudent(N_ITEMS, hidden=HIDDEN, dropout=0.0)
    method = get_method("kar")({"type": "kar"}, ctx, student)
    assert torch.equal(method.k_items, ctx.teacher.knowledge_item_emb)  # no standardisation, D_K wide
    batch = train_batch()
    assert torch.equal(method.user_knowledge(batch), ctx.teacher.splits["train"].knowledge_user_emb[batch.rows])
    ctx.teacher.knowledge_item_emb = None
    with pytest.raises(UserError, match="knowledge"):
        get_method("kar")({"type": "kar"}, ctx, student)


def test_kar_never_reads_the_teachers_prediction_for_a_test_sequence():
    """KAR's scores for test sequences are the same whatever the teacher generated or ranked for
    them (its knowledge is per user and per item), and change with the user's knowledge."""
    ctx = make_ctx()
    gen = torch.Generator().manual_seed(9)
    test = make_split(len(VALID_HIST), gen)
    test.knowledge_user_emb = torch.randn(len(VALID_HIST), D_K, generator=gen)
    ctx.teacher.splits["test"] = test
    torch.manual_seed(0)
    student = TinyStudent(N_ITEMS, hidden=HIDDEN, dropout=0.0)
    method = get_method("kar")({"type": "kar"}, ctx, student).eval()
    batch = Batch("test", torch.tensor([0, 1]), torch.tensor(VALID_HIST), torch.tensor(VALID_LEN), torch.tensor(VALID_TGT))

    def test_scores():
        with torch.no_grad():
            return forward(student, method, batch)[0].clone()

    before = test_scores()
    # the teacher's predictions for these test sequences: replaced by the targets themselves
    test.gen_emb = ctx.teacher.item_emb[torch.tensor(VALID_TGT)].half()
    test.topk_items = torch.tensor(VALID_TGT).view(-1, 1).repeat(1, TOPN)
    test.target_dist = torch.zeros(len(VALID_TGT))
    assert torch.equal(test_scores(), before)
    test.knowledge_user_emb = test.knowledge_user_emb + 1.0
    assert not torch.equal(test_scores(), before)


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


def llmcf_item_vectors(ctx):
    """Standardised teacher title vectors (the text vectors) and their L2-normalised rows (retrieval)."""
    z = zscore_lists(ctx.teacher.item_emb)
    unit = [[x / math.sqrt(sum(y * y for y in row)) for x in row] for row in z]
    return z, unit


def mean_rows(rows, table):
    real = [i for i in rows if i < N_ITEMS]
    return [sum(table[i][d] for i in real) / len(real) for d in range(len(table[0]))]


def test_llmcf_retrieval_by_hand_excludes_self_and_same_user_window():
    ctx = llmcf_ctx()
    R = 2
    method = get_method("llmcf")({"type": "llmcf", "n_neighbors": R, "base_fraction": 1.0}, ctx, TinyStudent(N_ITEMS, HIDDEN))
    assert method.base.tolist() == list(range(6))
    _z, unit = llmcf_item_vectors(ctx)
    hist = ctx.train_history.tolist()
    keys = [mean_rows(h, unit) for h in hist]
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    for q in range(len(hist)):
        last = [i for i in hist[q] if i < N_ITEMS][-1]
        tgt = int(ctx.train_target[q])
        allowed = [c for c in range(len(hist)) if c != q
                   and not any(hist[c][p] == last and hist[c][p + 1] == tgt for p in range(L - 1))]
        got = method.train_nbr[q].tolist()
        assert len(set(got)) == R and set(got) <= set(allowed)
        want = sorted((dot(keys[q], keys[c]) for c in allowed), reverse=True)[:R]
        assert [dot(keys[q], keys[c]) for c in got] == pytest.approx(want, abs=1e-5)
        assert method.train_nbr_valid[q].all()
    # row 0 (1,2,3 -> 4) must not see row 1 (2,3,4: the same user's next window) nor itself
    assert 0 not in method.train_nbr[0].tolist() and 1 not in method.train_nbr[0].tolist()
    assert 4 in method.train_nbr[0].tolist()  # identical history, different row: allowed
    # a valid/test query ranks the whole base by the same score, no exclusions
    vb = Batch("valid", torch.tensor([0]), torch.tensor([[2, 3, 4]]), torch.tensor([3]), torch.tensor([0]))
    nbr, valid = method.neighbors(vb)
    qk = mean_rows([2, 3, 4], unit)
    want = sorted((dot(qk, k) for k in keys), reverse=True)[:R]
    assert [dot(qk, keys[c]) for c in nbr[0].tolist()] == pytest.approx(want, abs=1e-5) and valid.all()
    # a smaller base: a seeded sample of round(0.5 * 6) rows; demonstrations come from it only
    half = get_method("llmcf")({"type": "llmcf", "n_neighbors": R, "base_fraction": 0.5}, ctx, TinyStudent(N_ITEMS, HIDDEN))
    assert len(half.base) == 3 and len(set(half.base.tolist())) == 3
    for q in range(6):
        rows = half.base[half.train_nbr[q]][half.train_nbr_valid[q]].tolist()
        assert q not in rows


def rms(x, w, eps=1e-5):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def llama_decoder_reference(icl, x):
    """LLM-CF's transformer_decoder.Transformer on x [T, d] for one sequence: complex rotary
    embedding (torch.polar, as LLaMA), one head at a time, causal softmax, SwiGLU."""
    T, d = x.shape
    for blk in icl.layers:
        H = blk.n_heads
        hd = d // H
        freqs = 1.0 / (10000.0 ** (torch.arange(0, hd, 2)[: hd // 2].float() / hd))
        cis = torch.polar(torch.ones(T, hd // 2), torch.outer(torch.arange(T).float(), freqs))
        a = rms(x, blk.attention_norm.weight)
        q, k, v = a @ blk.wq.weight.T, a @ blk.wk.weight.T, a @ blk.wv.weight.T
        heads = []
        for h in range(H):
            qh, kh, vh = (t[:, h * hd:(h + 1) * hd] for t in (q, k, v))
            qh = torch.view_as_real(torch.view_as_complex(qh.reshape(T, -1, 2).contiguous()) * cis).flatten(1)
            kh = torch.view_as_real(torch.view_as_complex(kh.reshape(T, -1, 2).contiguous()) * cis).flatten(1)
            out = torch.zeros(T, hd)
            for t in range(T):
                logits = torch.stack([qh[t] @ kh[u] / math.sqrt(hd) for u in range(t + 1)])
                out[t] = (torch.softmax(logits, 0).unsqueeze(1) * vh[: t + 1]).sum(0)
            heads.append(out)
        hcur = x + torch.cat(heads, 1) @ blk.wo.weight.T
        f = rms(hcur, blk.ffn_norm.weight)
        x = hcur + (F.silu(f @ blk.w1.weight.T) * (f @ blk.w3.weight.T)) @ blk.w2.weight.T
    return rms(x, icl.norm.weight)


def test_llmcf_adjust_state_by_hand_and_gradient():
    ctx = llmcf_ctx()
    student = TinyStudent(N_ITEMS, HIDDEN)
    method = get_method("llmcf")({"type": "llmcf", "n_neighbors": 2, "base_fraction": 1.0, "icl_weight": 0.1}, ctx, student)
    z, _unit = llmcf_item_vectors(ctx)
    raw = ctx.teacher.item_emb
    bank = ctx.teacher.splits["train"].gen_emb.float()
    mean, std = raw.mean(0), raw.std(0, unbiased=False)
    lin = lambda layer, x: x @ layer.weight.detach().T + layer.bias.detach()  # noqa: E731
    E = student.item_emb.weight.detach()
    batch = Batch("train", torch.tensor([0, 3]), ctx.train_history[[0, 3]], ctx.train_lengths[[0, 3]], ctx.train_target[[0, 3]])
    state = torch.randn(2, HIDDEN, generator=torch.Generator().manual_seed(0), requires_grad=True)
    out = method.adjust_state(state, batch)
    for bi, row in enumerate([0, 3]):
        toks = []
        for c in method.train_nbr[row].tolist():  # base = all rows: positions are rows
            h = ctx.train_history[c].tolist()
            real = [i for i in h if i < N_ITEMS]
            enc = sum(E[i] for i in real) / len(real)  # TinyStudent's encoder
            t_hist = torch.tensor(mean_rows(h, z))
            tgt = int(ctx.train_target[c])
            inter = lin(method.w_h, torch.cat([enc, lin(method.w_c, t_hist), E[tgt], lin(method.w_c, torch.tensor(z[tgt]))]))
            g = (bank[c] - mean) / std
            toks += [inter, lin(method.w_c, g / g.norm()), method.label.detach()]
        t_q = torch.tensor(mean_rows(ctx.train_history[row].tolist(), z))
        toks.append(lin(method.w_h, torch.cat([state[bi].detach(), lin(method.w_c, t_q), torch.zeros(HIDDEN),
                                               method.w_c.bias.detach()])))
        icl = llama_decoder_reference(method.icl, torch.stack(toks).float())[-1]
        want = state[bi].detach() + 0.1 * icl
        assert out[bi].tolist() == pytest.approx(want.tolist(), rel=1e-4, abs=1e-5)
    out.sum().backward()
    assert state.grad is not None
    for p in (method.w_h.weight, method.w_c.weight, method.label, method.icl.layers[0].wq.weight, student.item_emb.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize("backbone", ["gru4rec", "sasrec"])
def test_llmcf_demonstrations_go_through_the_backbones_encoder(backbone):
    """As SASREC_aug / GRU4REC_aug (Jeryi-Sun/LLM-CF models/SASREC.py, GRU4REC.py) override
    BaseModel.embed_input_fields: a demonstration's history enters its interaction token through
    the recommender's own encoder (log2feats / his2feat), not as mean-pooled item-ID embeddings."""
    from dllm2rec.distill.llmcf import history_text
    from dllm2rec.student import get_backbone

    torch.manual_seed(0)
    ctx = llmcf_ctx()
    student = get_backbone(backbone)(N_ITEMS, hidden=HIDDEN, max_len=3).eval()
    method = get_method("llmcf")({"type": "llmcf", "n_neighbors": 2, "base_fraction": 1.0}, ctx, student)
    batch = Batch("train", torch.tensor([0]), ctx.train_history[[0]], ctx.train_lengths[[0]], ctx.train_target[[0]])
    state = student.encode(batch.history, batch.lengths)
    with torch.no_grad():
        seq, _valid = method.tokens(state, batch)
        row = int(method.base[method.train_nbr[0, 0]])
        hist, length, tgt = ctx.train_history[[row]], ctx.train_lengths[[row]], ctx.train_target[[row]]
        fields = lambda enc: torch.cat([enc, method.w_c(history_text(hist, method.text)),  # noqa: E731
                                        student.item_emb.weight[tgt], method.w_c(method.text[tgt])], 1)
        encoded = method.w_h(fields(student.encode(hist, length)))[0]
        pooled = method.w_h(fields(history_text(hist, torch.cat([student.item_emb.weight[:-1],
                                                                  torch.zeros(1, HIDDEN)]))))[0]
    assert seq[0, 0].tolist() == pytest.approx(encoded.tolist(), abs=1e-5)
    assert (seq[0, 0] - pooled).abs().max() > 1e-3


def test_llmcf_in_context_feature_is_learned():
    """With the student frozen, training only LLM-CF's own parameters lowers the student's loss:
    the in-context feature reaches the scores and carries a learnable signal."""
    ctx = llmcf_ctx()
    torch.manual_seed(0)
    student = TinyStudent(N_ITEMS, HIDDEN, dropout=0.0)
    method = get_method("llmcf")({"type": "llmcf", "n_neighbors": 2, "base_fraction": 1.0, "icl_weight": 1.0}, ctx, student)
    for p in student.parameters():
        p.requires_grad_(False)
    S = ctx.train_history.shape[0]
    batch = Batch("train", torch.arange(S), ctx.train_history, ctx.train_lengths, ctx.train_target,
                  (ctx.train_target + 1) % N_ITEMS)
    opt = torch.optim.Adam(method.parameters(), lr=0.02)

    def loss_now():
        scores, _ = forward(student, method, batch)
        return student.rec_loss(scores, batch.target, batch.negative)

    before = float(loss_now())
    for _ in range(100):
        loss = loss_now()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss_now()) < 0.5 * before


def test_llmcf_decoder_width_and_minilm_parts():
    from dllm2rec.distill.llmcf import InContextTransformer
    from dllm2rec.distill.spec import parse_options

    icl = InContextTransformer(64, n_layers=2, n_heads=2)
    assert icl.layers[0].w1.out_features == 96  # 32 * ceil(int(2 * 128 / 3) / 32), LLaMA's rule
    assert parse_options({"type": "llmcf", "encoder": "minilm"}).teacher_parts() == {"text_item_embeddings", "text_generated_embeddings"}
    assert not get_method("llmcf").uses_teacher_at_inference
