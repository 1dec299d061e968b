rule base_model:
    """The teacher's base causal LM: a pointer to a local/hub model, or a safetensors copy of a PyPI GGUF."""
    input:
        code=code("teacher"),
    output:
        "resources/models/{teacher}/base.json",
    log:
        "results/logs/teacher/{teacher}.base_model.log",
    conda:
        "../../envs/teacher.yaml"
    params:
        spec=lambda wildcards: teacher_cfg(wildcards)["base_model"],
    shell:
        "python -m dllm2rec base-model --spec {params.spec:q} --out {output} > {log} 2>&1"


rule sft:
    """BIGRec: LoRA instruction tuning of the base model on the dataset's training sequences."""
    input:
        **data_files("{dataset}"),
        base="resources/models/{teacher}/base.json",
        code=code("teacher"),
    output:
        directory("results/teacher/{dataset}/{teacher}/adapter"),
    log:
        "results/logs/teacher/{dataset}/{teacher}/sft.log",
    benchmark:
        "results/benchmarks/teacher/{dataset}/{teacher}/sft.tsv"
    conda:
        "../../envs/teacher.yaml"
    threads: 8
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
        work="results/work/teacher/{dataset}/{teacher}/sft",
        launcher=sft_launcher,
    shell:
        "{params.launcher} -m dllm2rec sft --base {input.base} --data $(dirname {input.items_parquet}) --params {params.cfg:q}"
        " --noun {params.noun} --out {output} --work {params.work} > {log} 2>&1"


rule item_embeddings:
    """Grounding side 1: every item title embedded by the base model (last layer, last token)."""
    input:
        **data_files("{dataset}"),
        base="resources/models/{teacher}/base.json",
        code=code("teacher"),
    output:
        "results/teacher/{dataset}/{teacher}/item_embeddings.parquet",
    log:
        "results/logs/teacher/{dataset}/{teacher}/item_embeddings.log",
    benchmark:
        "results/benchmarks/teacher/{dataset}/{teacher}/item_embeddings.tsv"
    conda:
        "../../envs/teacher.yaml"
    threads: 8
    resources:
        gpu=1,
        mem_mb=lambda wildcards: teacher_cfg(wildcards)["mem_mb"],
        runtime=2 * 60,
    params:
        cfg=item_embedding_params,
    shell:
        "python -m dllm2rec item-embeddings --base {input.base} --data $(dirname {input.items_parquet})"
        " --params {params.cfg:q} --out {output} > {log} 2>&1"


rule teacher_shard:
    """One shard of a split: batched beam-search generation, then grounding into top-N items."""
    input:
        **data_files("{dataset}"),
        base="resources/models/{teacher}/base.json",
        adapter="results/teacher/{dataset}/{teacher}/adapter",
        item_emb="results/teacher/{dataset}/{teacher}/item_embeddings.parquet",
        code=code("teacher"),
    output:
        ranks="results/teacher/{dataset}/{teacher}/ranks/{split}/{scatteritem}.parquet",
        emb="results/teacher/{dataset}/{teacher}/generated_embeddings/{split}/{scatteritem}.parquet",
    log:
        "results/logs/teacher/{dataset}/{teacher}/generate.{split}.{scatteritem}.log",
    benchmark:
        "results/benchmarks/teacher/{dataset}/{teacher}/generate.{split}.{scatteritem}.tsv"
    conda:
        "../../envs/teacher.yaml"
    threads: 8
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
        "python -m dllm2rec teacher-shard --base {input.base} --adapter {input.adapter}"
        " --data $(dirname {input.items_parquet}) --item-emb {input.item_emb} --split {wildcards.split}"
        " --shard {params.shard} --shards {params.shards} --params {params.cfg:q} --noun {params.noun}"
        " --out-ranks {output.ranks} --out-emb {output.emb} > {log} 2>&1"


rule teacher_gather:
    """The shards of a split, concatenated in seq_id order."""
    input:
        ranks=gather.teacher_gen(
            "results/teacher/{{dataset}}/{{teacher}}/ranks/{{split}}/{scatteritem}.parquet"
        ),
        emb=gather.teacher_gen(
            "results/teacher/{{dataset}}/{{teacher}}/generated_embeddings/{{split}}/{scatteritem}.parquet"
        ),
        code=code("teacher"),
    output:
        ranks="results/teacher/{dataset}/{teacher}/ranks/{split}.parquet",
        emb="results/teacher/{dataset}/{teacher}/generated_embeddings/{split}.parquet",
    log:
        "results/logs/teacher/{dataset}/{teacher}/gather.{split}.log",
    conda:
        "../../envs/teacher.yaml"
    shell:
        "python -m dllm2rec teacher-gather --ranks {input.ranks} --embs {input.emb}"
        " --out-ranks {output.ranks} --out-emb {output.emb} > {log} 2>&1"


rule teacher_metrics:
    """The teacher's own test HR/NDCG (Table 5's BIGRec row) and inference wall time (Table 6)."""
    input:
        **data_files("{dataset}"),
        ranks="results/teacher/{dataset}/{teacher}/ranks/test.parquet",
        code=code("teacher"),
    output:
        "results/teacher/{dataset}/{teacher}/metrics.json",
    log:
        "results/logs/teacher/{dataset}/{teacher}/metrics.log",
    conda:
        "../../envs/teacher.yaml"
    shell:
        "python -m dllm2rec teacher-metrics --ranks {input.ranks} --data $(dirname {input.items_parquet})"
        " --out {output} > {log} 2>&1"
