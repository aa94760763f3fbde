"""The FiFa-11 task registry: prompt templates, targets and metric names of each instruction task."""
from fifa_lab.tasks.registry import (
    IMAGE_TOKEN,
    REGION_KINDS,
    REGION_TOKEN,
    SAMPLE_FEATURES,
    SEG_TOKEN,
    TASKS,
    Task,
    get_task,
    make_sample,
    register_task,
    task_rng,
)
from fifa_lab.tasks.fifa11 import FIFA11, NO_ARTIFACT, RSEG_ANSWER, build_samples, format_box, parse_boxes

__all__ = ["FIFA11", "IMAGE_TOKEN", "NO_ARTIFACT", "REGION_KINDS", "REGION_TOKEN", "RSEG_ANSWER", "SAMPLE_FEATURES", "SEG_TOKEN",
           "TASKS", "Task", "build_samples", "format_box", "get_task", "make_sample", "parse_boxes",
           "register_task", "task_rng"]
