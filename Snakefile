# dllm2rec: distil an LLM-based recommender (BIGRec) into sequential students (DLLM2Rec).
#   snakemake --cores all results/table5.csv              # the embedded default (CPU, ml-100k)
#   snakemake --cores all --configfile configs/paper.yaml  # the paper's scale (GPU teacher)
# Rules are thin: each calls one function of the dllm2rec package (`python -m dllm2rec ...`).
from snakemake.utils import min_version

min_version("9.0")  # the suite runs with 9.27


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/config.smk"  # validates the config and writes its defaults


scattergather:
    teacher_gen=config["teacher_shards"],


include: "workflow/rules/paths.smk"


wildcard_constraints:
    dataset="|".join(map(re.escape, config["datasets"])) or "NONE",
    teacher="|".join(map(re.escape, config["teachers"])) or "NONE",
    method="|".join(map(re.escape, config["methods"])) or "NONE",
    backbone="|".join(map(re.escape, config["student"]["backbones"])) or "NONE",
    split="train|valid|test",
    seed=r"\d+",
    scatteritem=r"\d+-of-\d+",


include: "workflow/rules/data.smk"
include: "workflow/rules/teacher.smk"
include: "workflow/rules/text_encoder.smk"
include: "workflow/rules/knowledge.smk"
include: "workflow/rules/student.smk"
include: "workflow/rules/selection.smk"
include: "workflow/rules/tables.smk"


rule all:
    default_target: True
    input:
        final_targets(),
        report_targets(),
