rule table4:
    """Table 4: dataset statistics."""
    input:
        stats=expand("results/data/{dataset}/stats.json", dataset=TABLES["datasets"]),
        code=code("tables"),
    output:
        report("results/table4.csv", caption="../report/table4.rst", category="Tables"),
    log:
        "results/logs/tables/table4.log",
    conda:
        "../../envs/student.yaml"
    shell:
        "python -m dllm2rec table4 --stats {input.stats} --out {output} > {log} 2>&1"


rule table5:
    """Table 5: the teacher, then per backbone every method; mean over seeds, Gain.S and Gain.B."""
    input:
        unpack(table5_inputs),
        ranks=student_files("ranks.parquet"),
        code=code("tables"),
    output:
        table=report(
            "results/table5.csv", caption="../report/table5.rst", category="Tables"
        ),
        seeds=report(
            "results/table5_seeds.csv",
            caption="../report/table5_seeds.rst",
            category="Tables",
        ),
    log:
        "results/logs/tables/table5.log",
    conda:
        "../../envs/student.yaml"
    params:
        methods=TABLES["methods"],
    shell:
        "python -m dllm2rec table5 --teacher {input.teacher} --students {input.students}"
        " --methods {params.methods} --ranks {input.ranks}"
        " --out {output.table} --out-seeds {output.seeds} > {log} 2>&1"


rule table6:
    """Table 6: accuracy and inference time of the teacher against the best distilled student."""
    input:
        unpack(table5_inputs),
        code=code("tables"),
    output:
        report("results/table6.csv", caption="../report/table6.rst", category="Tables"),
    log:
        "results/logs/tables/table6.log",
    conda:
        "../../envs/student.yaml"
    shell:
        "python -m dllm2rec table6 --teacher {input.teacher} --students {input.students} --out {output} > {log} 2>&1"


rule ablation_table:
    """Tables 7 (ranking distillation) and 8 (embedding distillation): DLLM2Rec variants."""
    input:
        students=lambda wildcards: ablation_inputs(wildcards.table)(wildcards),
        code=code("tables"),
    output:
        report(
            "results/{table}.csv", caption="../report/ablation.rst", category="Tables"
        ),
    log:
        "results/logs/tables/{table}.log",
    wildcard_constraints:
        table="table7|table8",
    conda:
        "../../envs/student.yaml"
    shell:
        "python -m dllm2rec ablation --students {input.students} --out {output} > {log} 2>&1"


rule figure2:
    """Figure 2: DLLM2Rec's test NDCG@20 and HR@20 as lambda_d and each gamma vary."""
    input:
        students=figure2_inputs,
        code=code("tables"),
    output:
        figure=report(
            "results/figure2.png", caption="../report/figure2.rst", category="Figures"
        ),
        table="results/figure2.csv",
    log:
        "results/logs/tables/figure2.log",
    conda:
        "../../envs/student.yaml"
    params:
        dllm2rec=lambda wildcards: jsonarg(resolve_method("dllm2rec")),
    shell:
        "python -m dllm2rec figure2 --students {input.students} --dllm2rec {params.dllm2rec:q}"
        " --out {output.figure} --out-table {output.table} > {log} 2>&1"


rule table1:
    """Table 1: the teacher against the plain DROS student, accuracy and inference time."""
    input:
        teacher=lambda wildcards: table5_inputs(wildcards)["teacher"],
        students=student_files("metrics.json", ["dros"], ["none"]),
        code=code("tables"),
    output:
        report("results/table1.csv", caption="../report/table1.rst", category="Tables"),
    log:
        "results/logs/tables/table1.log",
    conda:
        "../../envs/student.yaml"
    shell:
        "python -m dllm2rec table1 --teacher {input.teacher} --students {input.students} --out {output} > {log} 2>&1"


rule table2:
    """Table 2: how often the teacher ranks the test target better, and worse, than the plain DROS student."""
    input:
        teacher_ranks=expand(
            "results/teacher/{dataset}/{teacher}/ranks/test.parquet",
            dataset=TABLES["datasets"],
            teacher=TABLES["teacher"],
        ),
        student_ranks=student_files("ranks.parquet", ["dros"], ["none"]),
        items_parquet=expand(
            "results/data/{dataset}/items.parquet", dataset=TABLES["datasets"]
        ),
        code=code("tables", "teacher/metrics"),
    output:
        report("results/table2.csv", caption="../report/table2.rst", category="Tables"),
    log:
        "results/logs/tables/table2.log",
    conda:
        "../../envs/student.yaml"
    shell:
        "python -m dllm2rec table2 --teacher-ranks {input.teacher_ranks} --student-ranks {input.student_ranks}"
        " --items {input.items_parquet} --out {output} > {log} 2>&1"


rule table3:
    """Table 3: overlap of the teacher's and the plain DROS student's top-20 lists, and their hit rates."""
    input:
        teacher_ranks=expand(
            "results/teacher/{dataset}/{teacher}/ranks/test.parquet",
            dataset=TABLES["datasets"],
            teacher=TABLES["teacher"],
        ),
        student_ranks=student_files("ranks.parquet", ["dros"], ["none"]),
        items_parquet=expand(
            "results/data/{dataset}/items.parquet", dataset=TABLES["datasets"]
        ),
        code=code("tables", "teacher/metrics"),
    output:
        report("results/table3.csv", caption="../report/table3.rst", category="Tables"),
    log:
        "results/logs/tables/table3.log",
    conda:
        "../../envs/student.yaml"
    shell:
        "python -m dllm2rec table3 --teacher-ranks {input.teacher_ranks} --student-ranks {input.student_ranks}"
        " --items {input.items_parquet} --out {output} > {log} 2>&1"


rule teacher_table:
    """The teacher's test metrics at every K and its inference time, per dataset."""
    input:
        teacher=lambda wildcards: table5_inputs(wildcards)["teacher"],
        code=code("tables"),
    output:
        report(
            "results/teacher_metrics.csv",
            caption="../report/teacher_metrics.rst",
            category="Teacher",
        ),
    log:
        "results/logs/tables/teacher_metrics.log",
    conda:
        "../../envs/student.yaml"
    shell:
        "python -m dllm2rec teacher-table --teacher {input.teacher} --out {output} > {log} 2>&1"


rule sft_loss_figure:
    """The teacher's fine-tuning loss per epoch."""
    input:
        adapters=expand(
            "results/teacher/{dataset}/{teacher}/adapter",
            dataset=TABLES["datasets"],
            teacher=TABLES["teacher"],
        ),
        code=code("tables"),
    output:
        report(
            "results/figures/sft_loss.png",
            caption="../report/sft_loss.rst",
            category="Teacher",
        ),
    log:
        "results/logs/tables/sft_loss.log",
    conda:
        "../../envs/student.yaml"
    shell:
        "python -m dllm2rec sft-curve --adapters {input.adapters} --out {output} > {log} 2>&1"


rule valid_ndcg_figure:
    """Validation NDCG@20 per epoch of every run of Table 5."""
    input:
        logs=student_files("train_log.csv"),
        code=code("tables"),
    output:
        report(
            "results/figures/valid_ndcg.png",
            caption="../report/valid_ndcg.rst",
            category="Training",
        ),
    log:
        "results/logs/tables/valid_ndcg.log",
    conda:
        "../../envs/student.yaml"
    shell:
        "python -m dllm2rec training-curves --logs {input.logs} --out {output} > {log} 2>&1"


rule table5_bars:
    """Table 5 as bars."""
    input:
        unpack(table5_inputs),
        code=code("tables"),
    output:
        report(
            "results/figures/table5_bars.png",
            caption="../report/table5_bars.rst",
            category="Figures",
        ),
    log:
        "results/logs/tables/table5_bars.log",
    conda:
        "../../envs/student.yaml"
    params:
        methods=TABLES["methods"],
    shell:
        "python -m dllm2rec table5-bars --teacher {input.teacher} --students {input.students}"
        " --methods {params.methods} --out {output} > {log} 2>&1"
