"""FiFa-MLLM speed: training samples/s, inference latency per image for each task, peak memory.

    .venv/bin/python benchmarks/bench_train.py [--run-dir runs/default] [--model runs/default/model/best]
                                               [--steps 30] [--batch-size 8] [--per-task 8] [--infer-batch 8]
                                               [--device auto] [--out PATH]

Without ``--run-dir`` a small dataset (40 faces) is built in a temporary folder. Without ``--model`` a
fresh default tiny model is used; its answers are random, so generation is capped at the reference
answer's length (``max_new_tokens``) to time the same work a trained model does. Training runs the real
trainer (accelerate, AdamW, logging) for ``--steps`` after a few warm-up steps, without validation or
checkpoints in the timed part. Latency is the median over ``--per-task`` validation samples of each task,
one image at a time (``generate``: prompt pass, KV-cached decoding and the mask decoder), and per image
when the same samples go ``--infer-batch`` at a time through ``generate_batch`` (as the benchmark runner
does). Peak memory is the process's maximum resident set, and on a GPU also torch's peak allocation.
Writes JSON with the machine's details to ``--out`` (default benchmarks/results/train.json).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fifa_lab.data.build import build_dataset, load_datasets
from fifa_lab.io import write_json
from fifa_lab.model import FiFaMLLM
from fifa_lab.tasks import TASKS
from fifa_lab.train import SampleDataset, TrainConfig, train
from fifa_lab.train.recipe import ModelChoice, prepare_model


def _train_rate(run_dir: Path, steps: int, batch_size: int, device: str) -> dict:
    """Samples/s of the trainer over ``steps`` steps (after 3 warm-up steps), in a scratch copy of the run."""
    scratch = Path(tempfile.mkdtemp(prefix="bench_train_"))
    try:
        (scratch / "data").symlink_to((run_dir / "data").resolve(), target_is_directory=True)
        model = prepare_model(scratch, ModelChoice())
        far = 10 ** 6  # no validation or checkpoint inside the timed steps
        config = dict(steps=3 + steps, batch_size=batch_size, warmup_steps=1, eval_every=far, checkpoint_every=far,
                      device=device)
        train(scratch, model, TrainConfig(**config, stop_after=3))
        start = time.perf_counter()
        train(scratch, model, TrainConfig(**config))
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(scratch)
    return {"steps": steps, "batch_size": batch_size, "seconds": round(seconds, 2),
            "samples_per_second": round(steps * batch_size / seconds, 2), "parameters": model.parameter_counts()}


def _latencies(model: FiFaMLLM, run_dir: Path, per_task: int, trained: bool, batch: int) -> dict:
    data = load_datasets(run_dir)
    val = SampleDataset(data.samples["validation"], data.images["validation"], model.config.image_size)
    out = {}
    for task in TASKS:
        indices = [i for i, t in enumerate(val.tasks) if t == task][:per_task]
        if not indices:
            continue
        images, prompts, regions, limits = [], [], [], []
        for index in indices:
            row = val.samples[index]
            region = val[index]["region"]
            regions.append(None if region is None else region.numpy().astype(bool))
            images.append(val.image(index))
            prompts.append(row["prompt"])
            limits.append(256 if trained else len(model.tokenizer.encode(row["target"], add_special_tokens=False)) + 1)
        times, tokens = [], []
        for image, prompt, region, limit in zip(images, prompts, regions, limits):
            start = time.perf_counter()
            answer = model.generate(image, prompt, region=region, max_new_tokens=limit)
            times.append(time.perf_counter() - start)
            tokens.append(len(model.tokenizer.encode(answer.text, add_special_tokens=False)))
        start = time.perf_counter()
        for at in range(0, len(indices), batch):
            part = slice(at, at + batch)
            model.generate_batch(images[part], prompts[part], regions[part], max_new_tokens=max(limits[part]))
        batched = (time.perf_counter() - start) / len(indices)
        out[task] = {"n": len(times), "median_ms": round(1000 * statistics.median(times), 1),
                     "batched_ms_per_image": round(1000 * batched, 1),
                     "mean_answer_tokens": round(float(np.mean(tokens)), 1)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, help="a run folder with data/ (default: build 40 faces)")
    parser.add_argument("--model", type=Path, help="a trained model folder (default: a fresh tiny model)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--per-task", type=int, default=8)
    parser.add_argument("--infer-batch", type=int, default=8, help="images per generate_batch call")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "train.json")
    args = parser.parse_args()

    temporary = None
    run_dir = args.run_dir
    if run_dir is None:
        temporary = Path(tempfile.mkdtemp(prefix="bench_data_"))
        build_dataset(temporary, n_faces=40, seed=0)
        run_dir = temporary
    try:
        training = _train_rate(run_dir, args.steps, args.batch_size, args.device)
        device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
        model = FiFaMLLM.from_pretrained(args.model, device=device) if args.model else \
            prepare_model(run_dir, ModelChoice()).to(device).eval()
        latency = _latencies(model, run_dir, args.per_task, trained=args.model is not None, batch=args.infer_batch)
    finally:
        if temporary is not None:
            shutil.rmtree(temporary)

    result = {"training": training, "inference": latency, "model": str(args.model) if args.model else "fresh tiny",
              "device": device, "torch_threads": torch.get_num_threads(),
              "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
              "peak_cuda_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device == "cuda" else None,
              "machine": {"python": platform.python_version(), "torch": torch.__version__,
                          "processor": platform.processor() or platform.machine(),
                          "gpu": torch.cuda.get_device_name() if device == "cuda" else None}}
    print(f"training: {training['samples_per_second']} samples/s (batch {training['batch_size']}, "
          f"{training['steps']} steps, {device})")
    print(f"{'task':<7} {'median ms':>10} {f'batch {args.infer_batch} ms/img':>17} {'tokens':>7}")
    for task, row in latency.items():
        print(f"{task:<7} {row['median_ms']:>10} {row['batched_ms_per_image']:>17} {row['mean_answer_tokens']:>7}")
    print(f"peak RSS {result['peak_rss_mib']} MiB" + (f", peak CUDA {result['peak_cuda_mib']} MiB"
                                                      if result["peak_cuda_mib"] is not None else ""))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    print(json.dumps({"written": str(args.out)}))


if __name__ == "__main__":
    main()
