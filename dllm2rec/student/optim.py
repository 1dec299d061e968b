"""The eager student trainer's optimiser: ``torch.optim.Adam(fused=True)``'s update, without
``torch.optim``.

:class:`FusedAdam` makes exactly the calls ``torch.optim.Adam(params, lr, weight_decay=wd,
fused=True).step()`` makes (``torch/optim/adam.py`` ``_fused_adam``: per device and dtype, the
step counters ``+= 1``, then the one ``torch._fused_adam_`` kernel over every parameter that has
a gradient, its moments created at its first gradient), so a run's numbers are bit for bit those
of ``torch.optim.Adam`` (tests/test_student_train.py). What it saves is the import of
``torch._dynamo`` that every ``torch.optim`` optimiser triggers on first use (about 1.5 s of a
student job's start on a CPU); the fused groups have their own :class:`~dllm2rec.student.fused.StackedAdam`.
"""
from __future__ import annotations

import torch


class FusedAdam:
    """Adam with coupled L2 weight decay (``torch.optim.Adam``'s defaults otherwise: betas
    (0.9, 0.999), eps 1e-8, no amsgrad) over ``params``, one fused kernel per step."""

    def __init__(self, params, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.lr, self.weight_decay, self.betas, self.eps = float(lr), float(weight_decay), betas, float(eps)
        self.state: dict[int, dict] = {}  # parameter index -> {"step", "exp_avg", "exp_avg_sq"}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        groups: dict[tuple, list[list[torch.Tensor]]] = {}
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            st = self.state.get(i)
            if st is None:  # torch.optim.Adam's lazy state (fused: the step on the parameter's device, float32)
                st = self.state[i] = {"step": torch.zeros((), dtype=torch.float32, device=p.device),
                                      "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                      "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
            lists = groups.setdefault((p.device, p.dtype), [[], [], [], [], []])
            for lst, t in zip(lists, (p, p.grad, st["exp_avg"], st["exp_avg_sq"], st["step"])):
                lst.append(t)
        for params, grads, exp_avgs, exp_avg_sqs, steps in groups.values():
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=self.lr,
                               beta1=self.betas[0], beta2=self.betas[1], weight_decay=self.weight_decay,
                               eps=self.eps, maximize=False, grad_scale=None, found_inf=None)

    def state_dict(self) -> dict:
        return {"state": self.state, "lr": self.lr, "weight_decay": self.weight_decay}

    def load_state_dict(self, state: dict) -> None:
        self.state = {int(i): {k: v.to(self.params[int(i)].device) for k, v in st.items()}
                      for i, st in state["state"].items()}
