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
        code=code("tables"),
    output:
        table=report(
            "results/table5.csv", caption="../report/table5.rst", category="Tables"
        ),
        seeds="results/table5_seeds.csv",
    log:
        "results/logs/tables/table5.log",
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
