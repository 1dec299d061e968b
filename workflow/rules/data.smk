rule dataset:
    """Raw interactions and titles -> items, chronological 8:1:1 sequence splits, Table 4 stats."""
    input:
        raw=raw_files,
        code=code("data"),
    output:
        items_parquet="results/data/{dataset}/items.parquet",
        sequences="results/data/{dataset}/sequences.parquet",
        stats="results/data/{dataset}/stats.json",
    log:
        "results/logs/data/{dataset}.log",
    conda:
        "../../envs/data.yaml"
    params:
        cfg=dataset_params,
    shell:
        "python -m dllm2rec data --name {wildcards.dataset} --params {params.cfg:q}"
        " --out $(dirname {output.items_parquet}) > {log} 2>&1"


rule export_official:
    """Our artifacts in the official DLLM2Rec exchange format, so the authors' code runs on our data."""
    input:
        **data_files("{dataset}"),
        code=code("data"),
    output:
        directory("results/data/{dataset}/official"),
    log:
        "results/logs/data/{dataset}.export_official.log",
    conda:
        "../../envs/data.yaml"
    shell:
        "python -m dllm2rec export-official --data $(dirname {input.items_parquet}) --out {output} > {log} 2>&1"
