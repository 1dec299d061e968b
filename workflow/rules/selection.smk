checkpoint selection:
    """Per dataset x backbone x searched method, the grid point with the best validation NDCG@20
    (mean over seeds); the tables then read that point's runs (paths.smk: chosen_run).
    """
    input:
        students=selection_inputs,
        code=code("selection", "student_run", "render"),
    output:
        table=report(L.SELECTION, category="Data"),
        html=report(
            L.table_html("selection"),
            caption="../report/selection.rst",
            category="Tables",
        ),
    log:
        L.log("tables", "selection"),
    conda:
        "../../envs/student.yaml"
    shell:
        "python -m dllm2rec select --students {input.students} --out {output.table} --html {output.html} > {log} 2>&1"
