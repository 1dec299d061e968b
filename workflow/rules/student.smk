if config["student"]["fuse"]:
    # One job per group of runs that train together (dllm2rec/student_groups.py): a rule each,
    # named for its backbone and method, whose outputs are its members' run folders.
    STUDENT_GROUPS = plan_groups(student_runs(), config["student"]["fuse_members"])

    for _group in STUDENT_GROUPS:
        _first = _group.runs[0]
        _name = f"{_first.dataset}/{_first.teacher}/{_first.backbone}/{_group.name}"

        rule:
            name:
                _group.name
            input:
                **group_inputs(_group),
                code=method_code(_first.base),
            output:
                group_outputs(_group),
            log:
                L.log("students", f"groups/{_name}"),
            benchmark:
                L.benchmark("students", f"groups/{_name}")
            conda:
                "../../envs/student.yaml"
            threads: 1
            resources:
                mem_mb=student_mem_mb(len(_group.runs)),
                runtime=4 * 60,
                student_gpu=student_gpu,
                gres=config["student"]["gres"],
            params:
                members=members_arg(_group.runs),
                teacher=group_teacher_arg(_group),
                dataset=_first.dataset,
                teacher_name=_first.teacher,
                backbone=_first.backbone,
                device=config["student"]["device"],
                work=L.work("students", f"groups/{_name}"),
            shell:
                "DLLM2REC_PROGRESS={log:q} python -m dllm2rec train-group --data $(dirname {input.data_items}) {params.teacher}"
                " --dataset {params.dataset:q} --teacher-name {params.teacher_name:q} --backbone {params.backbone:q}"
                " --members {params.members:q} --work {params.work:q} --threads {threads}"
                " --device {params.device:q} 3>&2 > {log} 2>&1"

else:

    rule student:
        """One student run (backbone x method x seed): `student.fuse: false`, a job per run."""
        input:
            unpack(student_inputs),
            code=student_code,
        output:
            metrics=L.student_file("metrics"),
            model=L.student_file("model"),
            log_csv=L.student_file("log_csv"),
            ranks=L.student_file("ranks"),
        log:
            L.log("students", "{dataset}/{teacher}/{backbone}/{method}/seed{seed}"),
        benchmark:
            L.benchmark(
                "students", "{dataset}/{teacher}/{backbone}/{method}/seed{seed}"
            )
        conda:
            "../../envs/student.yaml"
        threads: 1
        resources:
            mem_mb=student_mem_mb(1),
            runtime=4 * 60,
            student_gpu=student_gpu,
            gres=config["student"]["gres"],
        params:
            members=point_members,
            teacher=student_teacher_arg,
            device=config["student"]["device"],
            work=L.work(
                "students", "{dataset}/{teacher}/{backbone}/{method}/seed{seed}"
            ),
        shell:
            "DLLM2REC_PROGRESS={log:q} python -m dllm2rec train-group --data $(dirname {input.data_items}) {params.teacher}"
            " --dataset {wildcards.dataset} --teacher-name {wildcards.teacher} --backbone {wildcards.backbone}"
            " --members {params.members:q} --work {params.work:q} --threads {threads}"
            " --device {params.device:q} 3>&2 > {log} 2>&1"
