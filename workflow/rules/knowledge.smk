# KAR's knowledge (dllm2rec/teacher/knowledge.py, docs/methods.md "KAR"): one text per user and
# per item from the teacher's base model, then embedded by the text encoder (all-MiniLM-L6-v2).


rule knowledge:
    """KAR's knowledge texts: per user (from the user's training interactions only) and per item
    (from its title), written by the teacher's base model, greedy and short."""
    input:
        **data_files(),
        base=L.base_model(),
        code=code("teacher", "dataset", "teacher_artifacts"),
    output:
        user_texts=L.teacher_file("knowledge_users"),
        item_texts=L.teacher_file("knowledge_items"),
    log:
        L.log("teacher", "{dataset}/{teacher}/knowledge"),
    benchmark:
        L.benchmark("teacher", "{dataset}/{teacher}/knowledge")
    wildcard_constraints:
        teacher=teachers_of("bigrec"),
    conda:
        "../../envs/teacher.yaml"
    threads: teacher_threads()
    resources:
        gpu=1,
        mem_mb=lambda wildcards: teacher_cfg(wildcards)["mem_mb"],
        runtime=4 * 60,
    params:
        cfg=knowledge_params,
        noun=lambda wildcards: dataset_cfg(wildcards)["noun"],
        teacher=lambda wildcards: L.teacher_dir(wildcards.dataset, wildcards.teacher),
    shell:
        "python -m dllm2rec knowledge --base {input.base} --data $(dirname {input.data_items})"
        " --params {params.cfg:q} --noun {params.noun:q} --teacher {params.teacher:q} > {log} 2>&1"


rule knowledge_embeddings:
    """KAR's knowledge texts embedded by all-MiniLM-L6-v2: every item, and per sequence its user's."""
    input:
        **data_files(),
        user_texts=L.teacher_file("knowledge_users"),
        item_texts=L.teacher_file("knowledge_items"),
        code=code("teacher", "dataset", "teacher_artifacts"),
    output:
        item_emb=L.teacher_file("knowledge_item_embeddings"),
        user_emb=[L.teacher_file("knowledge_user_embeddings", split=s) for s in SPLITS],
    log:
        L.log("teacher", "{dataset}/{teacher}/knowledge_embeddings"),
    wildcard_constraints:
        teacher=teachers_of("bigrec"),
    conda:
        "../../envs/text_encoder.yaml"
    threads: 2
    params:
        teacher=lambda wildcards: L.teacher_dir(wildcards.dataset, wildcards.teacher),
    shell:
        "python -m dllm2rec knowledge-embeddings --data $(dirname {input.data_items}) --teacher {params.teacher:q}"
        " --cache resources/downloads --device auto > {log} 2>&1"
