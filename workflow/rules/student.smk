rule student:
    """One student backbone trained with one distillation method and seed; selected on validation."""
    input:
        unpack(student_inputs),
        code=code(
            "student",
            "distill",
            "evaluate",
            "dataset",
            "teacher_artifacts",
            "student_run",
            "resume",
        ),
    output:
        metrics=L.student_file("metrics"),
        model=L.student_file("model"),
        log_csv=L.student_file("log_csv"),
        ranks=L.student_file("ranks"),
    log:
        L.log("students", "{dataset}/{teacher}/{backbone}/{method}/seed{seed}"),
    benchmark:
        L.benchmark("students", "{dataset}/{teacher}/{backbone}/{method}/seed{seed}")
    conda:
        "../../envs/student.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=4 * 60,
        student_gpu=student_gpu,
    params:
        cfg=student_params,
        teacher=student_teacher_arg,
        device=config["student"]["device"],
        work=L.work("students", "{dataset}/{teacher}/{backbone}/{method}/seed{seed}"),
    shell:
        "python -m dllm2rec train-student --data $(dirname {input.data_items}) {params.teacher}"
        " --dataset {wildcards.dataset} --teacher-name {wildcards.teacher}"
        " --backbone {wildcards.backbone} --method {wildcards.method} --params {params.cfg:q}"
        " --seed {wildcards.seed} --out $(dirname {output.metrics}) --work {params.work}"
        " --threads {threads} --device {params.device} > {log} 2>&1"
