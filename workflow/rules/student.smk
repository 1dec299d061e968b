rule student:
    """One student backbone trained with one distillation method and seed; selected on validation."""
    input:
        unpack(student_inputs),
        code=code("student", "distill", "evaluate"),
    output:
        metrics="results/students/{dataset}/{teacher}/{backbone}/{method}/seed{seed}/metrics.json",
        model="results/students/{dataset}/{teacher}/{backbone}/{method}/seed{seed}/model.pt",
        log_csv="results/students/{dataset}/{teacher}/{backbone}/{method}/seed{seed}/train_log.csv",
    log:
        "results/logs/students/{dataset}/{teacher}/{backbone}/{method}/seed{seed}.log",
    benchmark:
        "results/benchmarks/students/{dataset}/{teacher}/{backbone}/{method}/seed{seed}.tsv"
    conda:
        "../../envs/student.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=4 * 60,
        # 1 on a GPU (device cuda, or auto with a GPU visible here): profiles cap how many share it
        student_gpu=lambda wildcards: int(
            config["student"]["device"] == "cuda"
            or (
                config["student"]["device"] == "auto"
                and __import__("torch").cuda.is_available()
            )
        ),
    params:
        cfg=student_params,
        teacher=student_teacher_arg,
        device=config["student"]["device"],
        work="results/work/students/{dataset}/{teacher}/{backbone}/{method}/seed{seed}",
    shell:
        "python -m dllm2rec train-student --data $(dirname {input.items_parquet}) {params.teacher}"
        " --backbone {wildcards.backbone} --method {wildcards.method} --params {params.cfg:q}"
        " --seed {wildcards.seed} --out $(dirname {output.metrics}) --work {params.work}"
        " --threads {threads} --device {params.device} > {log} 2>&1"
