rule dataset:
    """Raw interactions and titles -> items, chronological 8:1:1 sequence splits, Table 4 stats."""
    input:
        raw=raw_files,
        code=code("data", "dataset"),
    output:
        **data_files(),
    log:
        L.log("data", "{dataset}"),
    conda:
        "../../envs/data.yaml"
    params:
        cfg=dataset_params,
        content=raw_content,
    shell:
        "python -m dllm2rec data --name {wildcards.dataset} --params {params.cfg:q}"
        " --out $(dirname {output.data_items}) > {log} 2>&1"


rule export_official:
    """Our artifacts in the official DLLM2Rec exchange format, so the authors' code runs on our data."""
    input:
        **data_files(),
        code=code("data", "dataset"),
    output:
        directory(f"{L.data_dir()}/{L.OFFICIAL_EXPORT}"),
    log:
        L.log("data", "{dataset}.export_official"),
    conda:
        "../../envs/data.yaml"
    shell:
        "python -m dllm2rec export-official --data $(dirname {input.data_items}) --out {output} > {log} 2>&1"


rule popularity:
    """Table 5's reference rows: the most popular training items (target counts) and chance."""
    input:
        **data_files(),
        code=code("dataset", "evaluate"),
    output:
        L.popularity_file(),
    log:
        L.log("data", "{dataset}.popularity"),
    conda:
        "../../envs/student.yaml"
    shell:
        "python -m dllm2rec popularity --data $(dirname {input.data_items}) --out {output} > {log} 2>&1"
