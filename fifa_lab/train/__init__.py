"""Training of FiFa-MLLM (DESIGN.md, "Model", "Run folder"): data pipeline and the accelerate trainer.

``data`` (:class:`SampleDataset`, :class:`StepBatchSampler`, :func:`collate`) and ``trainer``
(:class:`TrainConfig`, :func:`train`, :func:`evaluate`).
"""
from __future__ import annotations

from fifa_lab.train.data import SampleDataset, StepBatchSampler, collate, task_weights
from fifa_lab.train.trainer import TrainConfig, checkpoints, evaluate, train

__all__ = ["SampleDataset", "StepBatchSampler", "TrainConfig", "checkpoints", "collate", "evaluate", "task_weights",
           "train"]
