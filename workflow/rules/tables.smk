rule table4:
    """Table 4: dataset statistics."""
    input:
        stats=[L.data_file("stats", d) for d in TABLES["datasets"]],
        code=code("tables", "student_run", "teacher_artifacts", "dataset", "sweeps"),
    output:
        report(L.table("table4"), caption="../report/table4.rst", category="Tables"),
    log:
        L.log("tables", "table4"),
    conda:
        "../../envs/student.yaml"
    shell:
        "python -m dllm2rec table4 --stats {input.stats} --out {output} > {log} 2>&1"


rule table5:
    """Table 5: the teacher, then per backbone every method; mean over seeds, Gain.S and Gain.B."""
    input:
        unpack(table5_inputs),
        code=code("tables", "student_run", "teacher_artifacts", "dataset", "sweeps"),
    output:
        table=report(
            L.table("table5"), caption="../report/table5.rst", category="Tables"
        ),
        seeds=L.TABLE5_SEEDS,
    log:
        L.log("tables", "table5"),
    conda:
        "../../envs/student.yaml"
    params:
        methods=TABLES["methods"],
    shell:
        "python -m dllm2rec table5 --teacher {input.teacher} --students {input.students}"
        " --methods {params.methods} --out {output.table} --out-seeds {output.seeds} > {log} 2>&1"


rule table6:
    """Table 6: accuracy and inference time of the teacher against the best distilled student."""
    input:
        unpack(table5_inputs),
        code=code("tables", "student_run", "teacher_artifacts", "dataset", "sweeps"),
    output:
        report(L.table("table6"), caption="../report/table6.rst", category="Tables"),
    log:
        L.log("tables", "table6"),
    conda:
        "../../envs/student.yaml"
    shell:
        "python -m dllm2rec table6 --teacher {input.teacher} --students {input.students} --out {output} > {log} 2>&1"


rule ablation_table:
    """Tables 7 (ranking distillation) and 8 (embedding distillation): DLLM2Rec variants."""
    input:
        students=lambda wildcards: ablation_inputs(wildcards.table)(wildcards),
        code=code("tables", "student_run", "teacher_artifacts", "dataset", "sweeps"),
    output:
        report(L.TABLE, caption="../report/ablation.rst", category="Tables"),
    log:
        L.log("tables", "{table}"),
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
        code=code("tables", "student_run", "teacher_artifacts", "dataset", "sweeps"),
    output:
        figure=report(L.FIGURE2, caption="../report/figure2.rst", category="Figures"),
        table=L.FIGURE2_TABLE,
    log:
        L.log("tables", "figure2"),
    conda:
        "../../envs/student.yaml"
    params:
        dllm2rec=lambda wildcards: jsonarg(resolve_method("dllm2rec")),
    shell:
        "python -m dllm2rec figure2 --students {input.students} --dllm2rec {params.dllm2rec:q}"
        " --out {output.figure} --out-table {output.table} > {log} 2>&1"
