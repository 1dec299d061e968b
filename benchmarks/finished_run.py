"""A finished default run's teacher, for the benchmarks that measure it in the run's folder
(``generation_levers.py``, ``teacher_constrained.py``): the command-line options that name the
run, and the run's config, data, item titles and teacher (base model + its LoRA adapter)."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def add_arguments(ap) -> None:
    ap.add_argument("--results", default="results", help="the run's results folder")
    ap.add_argument("--config", default="config.yaml", help="the run's config")
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--teacher", default="smollm2-135m")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")


@dataclass
class Run:
    teacher_cfg: dict   # teachers.<teacher> of the config
    noun: str           # the dataset's prompt noun
    teacher_dir: Path   # results/teacher/<dataset>/<teacher>
    dataset: object     # dllm2rec.dataset.Dataset
    titles: list        # item titles as the teacher saw them
    model: object       # PeftModel: the base model with the run's adapter (or the base model alone)
    tokenizer: object


def load(args, dtype: str | None = None, adapter: bool = True) -> Run:
    """The run named by ``args`` (``dtype``: the teacher's, unless given; ``adapter`` False: the
    base model alone, as KAR's knowledge stage runs it)."""
    import torch
    import yaml
    from peft import PeftModel

    from dllm2rec import dataset as ds
    from dllm2rec.teacher.model import load_base
    from dllm2rec.teacher.prompts import item_titles

    torch.set_num_threads(args.threads)
    cfg = yaml.safe_load(open(args.config))
    tcfg = cfg["teachers"][args.teacher]
    results = Path(args.results)
    teacher_dir = results / "teacher" / args.dataset / args.teacher
    dataset = ds.load_dataset(str(results / "data" / args.dataset))
    model, tokenizer = load_base(f"resources/models/{args.teacher}/base.json", dtype=dtype or tcfg.get("dtype"))
    if adapter:
        model = PeftModel.from_pretrained(model, str(teacher_dir / "adapter")).eval()
    return Run(tcfg, cfg["datasets"][args.dataset]["noun"], teacher_dir, dataset, item_titles(dataset.items), model,
               tokenizer)
