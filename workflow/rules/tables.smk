# every table reads the run files through the contract modules
TABLES_CODE = code(
    "tables",
    "student_run",
    "teacher_artifacts",
    "dataset",
    "sweeps",
    "evaluate",
    "selection",
    "render",
    "distill/spec",  # the methods' names in the tables
    "teacher/coverage",  # imported by teacher_artifacts
)


rule table4:
    """Table 4: dataset statistics."""
    input:
        stats=[L.data_file("stats", d) for d in TABLES["datasets"]],
        code=TABLES_CODE,
    output:
        table=report(L.table("table4"), category="Data"),
        html=report(
            L.table_html("table4"), caption="../report/table4.rst", category="Tables"
        ),
    log:
        L.log("tables", "table4"),
    conda:
        "../../envs/student.yaml"
    shell:
        "python -m dllm2rec table4 --stats {input.stats} --out {output.table} --html {output.html} > {log} 2>&1"


rule table5:
    """Table 5: the teacher, then per backbone every method; mean over seeds, Gain.S and Gain.B."""
    input:
        teacher=teacher_metrics_files,
        students=table5_students(),
        chosen=table5_students(searched=True),
        ranks=student_files("ranks"),
        chosen_ranks=student_files("ranks", searched=True),
        popularity=popularity_files,
        code=TABLES_CODE,
    output:
        table=report(
            L.table("table5"), caption="../report/table5_data.rst", category="Data"
        ),
        seeds=report(L.TABLE5_SEEDS, category="Data"),
        md=L.TABLE5_MD,
        html=report(
            L.table_html("table5"), caption="../report/table5.rst", category="Tables"
        ),
        html_seeds=report(
            L.table_html("table5_seeds"),
            caption="../report/table5_seeds.rst",
            category="Tables",
        ),
    log:
        L.log("tables", "table5"),
    conda:
        "../../envs/student.yaml"
    params:
        methods=TABLES["methods"],
    shell:
        "python -m dllm2rec table5 --teacher {input.teacher} --students {input.students} {input.chosen}"
        " --methods {params.methods:q} --ranks {input.ranks} {input.chosen_ranks}"
        " --popularity {input.popularity}"
        " --out {output.table} --out-seeds {output.seeds} --out-md {output.md}"
        " --html {output.html} --html-seeds {output.html_seeds} > {log} 2>&1"


rule table6:
    """Table 6: accuracy and inference time of the teacher against the best distilled student."""
    input:
        teacher=teacher_metrics_files,
        students=table5_students(),
        chosen=table5_students(searched=True),
        code=TABLES_CODE,
    output:
        table=report(L.table("table6"), category="Data"),
        html=report(
            L.table_html("table6"), caption="../report/table6.rst", category="Tables"
        ),
    log:
        L.log("tables", "table6"),
    conda:
        "../../envs/student.yaml"
    shell:
        "python -m dllm2rec table6 --teacher {input.teacher} --students {input.students} {input.chosen} --out {output.table} --html {output.html} > {log} 2>&1"


rule ablation_table:
    """Tables 7 (ranking distillation) and 8 (embedding distillation): DLLM2Rec variants."""
    input:
        students=lambda wildcards: ablation_inputs(wildcards.table)(wildcards),
        chosen=lambda wildcards: ablation_inputs(wildcards.table, True)(wildcards),
        code=TABLES_CODE,
    output:
        table=report(L.TABLE, category="Data"),
        html=report(L.TABLE_HTML, caption="../report/ablation.rst", category="Tables"),
    log:
        L.log("tables", "{table}"),
    wildcard_constraints:
        table="table7|table8",
    conda:
        "../../envs/student.yaml"
    shell:
        "python -m dllm2rec ablation --students {input.students} {input.chosen} --out {output.table} --html {output.html} > {log} 2>&1"


rule figure2:
    """Figure 2: DLLM2Rec's test NDCG@20 and HR@20 as lambda_d and each gamma vary."""
    input:
        students=figure2_inputs(),
        chosen=figure2_inputs(searched=True),
        code=TABLES_CODE,
    output:
        figure=report(L.FIGURE2, caption="../report/figure2.rst", category="Figures"),
        table=report(L.FIGURE2_TABLE, category="Data"),
        html=report(
            L.table_html("figure2"),
            caption="../report/figure2_points.rst",
            category="Figures",
        ),
    log:
        L.log("tables", "figure2"),
    conda:
        "../../envs/student.yaml"
    params:
        dllm2rec=lambda wildcards: jsonarg(resolve_method("dllm2rec")),
    shell:
        "python -m dllm2rec figure2 --students {input.students} {input.chosen} --dllm2rec {params.dllm2rec:q}"
        " --out {output.figure} --out-table {output.table} --html {output.html} > {log} 2>&1"


rule table1:
    """Table 1: the teacher against the plain DROS student, accuracy and inference time."""
    input:
        teacher=teacher_metrics_files,
        students=student_files("metrics", [REFERENCE_BACKBONE], ["none"]),
        chosen=student_files("metrics", [REFERENCE_BACKBONE], ["none"], searched=True),
        code=TABLES_CODE,
    output:
        table=report(L.table("table1"), category="Data"),
        html=report(
            L.table_html("table1"), caption="../report/table1.rst", category="Tables"
        ),
    log:
        L.log("tables", "table1"),
    conda:
        "../../envs/student.yaml"
    shell:
        "python -m dllm2rec table1 --teacher {input.teacher} --students {input.students} {input.chosen} --out {output.table} --html {output.html} > {log} 2>&1"


rule table2:
    """Table 2: how often the teacher ranks the test target better, and worse, than the plain DROS student."""
    input:
        teacher=teacher_metrics_files,
        teacher_ranks=[
            L.teacher_file("ranks", d, TABLES["teacher"], split="test")
            for d in TABLES["datasets"]
        ],
        student_ranks=student_files("ranks", [REFERENCE_BACKBONE], ["none"]),
        chosen_ranks=student_files(
            "ranks", [REFERENCE_BACKBONE], ["none"], searched=True
        ),
        items_parquet=[L.data_file("items", d) for d in TABLES["datasets"]],
        code=TABLES_CODE,
    output:
        table=report(L.table("table2"), category="Data"),
        html=report(
            L.table_html("table2"), caption="../report/table2.rst", category="Tables"
        ),
    log:
        L.log("tables", "table2"),
    conda:
        "../../envs/student.yaml"
    shell:
        "python -m dllm2rec table2 --teacher {input.teacher} --teacher-ranks {input.teacher_ranks}"
        " --student-ranks {input.student_ranks} {input.chosen_ranks}"
        " --items {input.items_parquet} --out {output.table} --html {output.html} > {log} 2>&1"


rule table3:
    """Table 3: overlap of the teacher's and the plain DROS student's top-20 lists, and their hit rates."""
    input:
        teacher=teacher_metrics_files,
        teacher_ranks=[
            L.teacher_file("ranks", d, TABLES["teacher"], split="test")
            for d in TABLES["datasets"]
        ],
        student_ranks=student_files("ranks", [REFERENCE_BACKBONE], ["none"]),
        chosen_ranks=student_files(
            "ranks", [REFERENCE_BACKBONE], ["none"], searched=True
        ),
        items_parquet=[L.data_file("items", d) for d in TABLES["datasets"]],
        code=TABLES_CODE,
    output:
        table=report(L.table("table3"), category="Data"),
        html=report(
            L.table_html("table3"), caption="../report/table3.rst", category="Tables"
        ),
    log:
        L.log("tables", "table3"),
    conda:
        "../../envs/student.yaml"
    shell:
        "python -m dllm2rec table3 --teacher {input.teacher} --teacher-ranks {input.teacher_ranks}"
        " --student-ranks {input.student_ranks} {input.chosen_ranks}"
        " --items {input.items_parquet} --out {output.table} --html {output.html} > {log} 2>&1"


rule teacher_table:
    """The teacher's test metrics at every K and its inference time, per dataset."""
    input:
        teacher=teacher_metrics_files,
        code=TABLES_CODE,
    output:
        table=report(L.table("teacher_metrics"), category="Data"),
        html=report(
            L.table_html("teacher_metrics"),
            caption="../report/teacher_metrics.rst",
            category="Teacher",
        ),
    log:
        L.log("tables", "teacher_metrics"),
    conda:
        "../../envs/student.yaml"
    shell:
        "python -m dllm2rec teacher-table --teacher {input.teacher} --out {output.table} --html {output.html} > {log} 2>&1"


rule sft_loss_figure:
    """The teacher's fine-tuning loss per epoch."""
    input:
        teacher=teacher_metrics_files,
        adapters=[
            L.teacher_file("adapter", d, TABLES["teacher"]) for d in TABLES["datasets"]
        ],
        code=TABLES_CODE,
    output:
        report(
            L.figure("sft_loss"),
            caption="../report/sft_loss.rst",
            category="Teacher",
        ),
    log:
        L.log("tables", "sft_loss"),
    conda:
        "../../envs/student.yaml"
    shell:
        "python -m dllm2rec sft-curve --teacher {input.teacher} --adapters {input.adapters}"
        " --out {output} > {log} 2>&1"


rule valid_ndcg_figure:
    """Validation NDCG@20 per epoch of every run of Table 5."""
    input:
        students=student_files("metrics"),
        chosen=student_files("metrics", searched=True),
        logs=student_files("log_csv"),
        chosen_logs=student_files("log_csv", searched=True),
        code=TABLES_CODE,
    output:
        report(
            L.figure("valid_ndcg"),
            caption="../report/valid_ndcg.rst",
            category="Training",
        ),
    log:
        L.log("tables", "valid_ndcg"),
    conda:
        "../../envs/student.yaml"
    shell:
        "python -m dllm2rec training-curves --students {input.students} {input.chosen} --out {output} > {log} 2>&1"


rule table5_bars:
    """Table 5 as bars."""
    input:
        teacher=teacher_metrics_files,
        students=table5_students(),
        chosen=table5_students(searched=True),
        popularity=popularity_files,
        code=TABLES_CODE,
    output:
        report(
            L.figure("table5_bars"),
            caption="../report/table5_bars.rst",
            category="Figures",
        ),
    log:
        L.log("tables", "table5_bars"),
    conda:
        "../../envs/student.yaml"
    params:
        methods=TABLES["methods"],
    shell:
        "python -m dllm2rec table5-bars --teacher {input.teacher} --students {input.students} {input.chosen}"
        " --methods {params.methods:q} --popularity {input.popularity} --out {output} > {log} 2>&1"
