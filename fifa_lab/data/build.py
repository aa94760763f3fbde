"""Build the synthetic FiFa datasets into a run folder: image records, instruction samples, data card.

``build_dataset(run_dir, n_faces)`` writes::

    run_dir/data/images/       DatasetDict train / validation / test of image records (records.py)
    run_dir/data/samples/      DatasetDict of FiFa-11 instruction samples (tasks/registry.py)
    run_dir/data/data_card.json  counts per split / class / task, parameters, seed, versions, hashes

How it scales: image records come from ``Dataset.from_generator`` (rows stream to Arrow files in
batches; ``num_proc`` processes each generate a shard of faces), samples from a batched ``.map`` over the
image records (the images themselves are never decoded for it). Memory stays flat in the number of faces.

Nothing lost: each dataset is written through :func:`fifa_lab.io.atomic_path` (a temporary folder
beside its final place, moved there once complete) with its build parameters (``fifa_build.json``)
inside; a later call with the same parameters skips a finished dataset, so an interrupted build resumes
at the dataset it was writing, and leftovers of an interrupted build are removed. One build per run
folder at a time.

Same seed, same data: face ``i`` is ``synth_face`` of a seed drawn from ``(seed, i)``, its fakes and
their samples likewise, so the data does not depend on ``num_proc``, batch sizes or build order.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict, Features, load_from_disk

from fifa_lab.annotate import annotate
from fifa_lab.annotate.mask import get_rule
from fifa_lab.data.records import (
    IMAGE_FEATURES,
    SCHEMA_VERSION,
    SPLIT_RATIOS,
    SPLITS,
    assign_split,
    fake_label_map,
    make_record,
)
from fifa_lab.faces import synth_face
from fifa_lab.fict import ConceptTree, coarse_tree, leaf_lookup, load_tree
from fifa_lab.forge import forge
from fifa_lab.forge.core import ground_truth_concepts
from fifa_lab.forge.post import apply_post, random_chain
from fifa_lab.forge.trace import DEFAULT_TRACE
from fifa_lab.io import atomic_path, write_json
from fifa_lab.tasks import FIFA11, SAMPLE_FEATURES, TASKS, build_samples

log = logging.getLogger(__name__)

PARAMS_FILE = "fifa_build.json"
CARD_FILE = "data_card.json"
SCRATCH_PREFIX = ".scratch-"  # datasets' cache files while a build runs, beside the outputs
IMAGE_ROWS_PER_SHARD = 128  # image records per saved Arrow file (~20 MB at 256 px)
FAKE_CLASSES = ("FS", "FR", "FE", "EFS")
# Columns the task builders read; the image column is left out so the sample map never decodes images.
SAMPLE_INPUTS = ("image_id", "label", "forgery_class", "label_map", "artifact_mask", "explanation", "split")


@dataclass(frozen=True)
class DatasetPaths:
    """Where a build put its outputs (all under ``run_dir/data``)."""

    root: Path
    images: Path
    samples: Path
    card: Path


@dataclass
class FiFaData:
    """What :func:`load_datasets` returns: both DatasetDicts and the data card."""

    images: DatasetDict
    samples: DatasetDict
    card: dict[str, Any]

    @property
    def tree(self) -> ConceptTree:
        """The tree the records' concepts, label maps and explanations use (the coarse one in that ablation)."""
        return concept_vocabulary(self.card.get("parameters", {}).get("concept_depth"))[0]


def data_paths(run_dir: str | os.PathLike) -> DatasetPaths:
    root = Path(run_dir) / "data"
    return DatasetPaths(root, root / "images", root / "samples", root / CARD_FILE)


# --- one face -> its records ------------------------------------------------------------------------------


def _derived_seed(*keys: int) -> int:
    """A 32-bit seed from integer keys; numpy's SeedSequence hashing is stable across versions."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


def source_id_of(seed: int, index: int) -> str:
    return f"synth-s{seed}-{index:06d}"


@functools.lru_cache(maxsize=4)
def concept_vocabulary(concept_depth: int | None) -> tuple[ConceptTree, np.ndarray | None]:
    """The tree whose concepts records and explanations name, and the table carrying FICT label maps to it.

    ``None`` is the 112-leaf FICT itself (no table); a depth is the FICT cut there (:func:`coarse_tree`),
    the coarse-vocabulary arm of the ablation. Forgeries are always made on the full FICT (methods pick
    their regions by its concepts); only what the annotator and the records call them changes.
    """
    fine = load_tree()
    if concept_depth is None:
        return fine, None
    coarse = coarse_tree(fine, concept_depth)
    return coarse, leaf_lookup(fine, coarse)


def face_records(index: int, config: dict[str, Any]) -> list[dict[str, Any]]:
    """The records of face ``index``: the real face, then its ``fakes_per_face`` fakes.

    Fakes cycle through ``classes`` across faces (face i, fake j gets ``classes[(i*k + j) % len]``) so
    the classes stay balanced for any number of faces. The annotator (rule ``annotator_rule``) sees the
    fake, its real source and the fake's own geometry (the image it explains), never the ground-truth mask.

    With ``post="random"`` the stored real image goes through its own random post-processing chain
    (JPEG, resizing, blur, noise), as every fake does: were only fakes compressed, "is it compressed"
    would answer "is it fake", and a detector would learn that shortcut instead of forgery traces.
    """
    seed, size = config["seed"], config["size"]
    classes, per_face = config["classes"], config["fakes_per_face"]
    fict = load_tree()
    tree, lookup = concept_vocabulary(config["concept_depth"])
    source_id = source_id_of(seed, index)
    face_seed = _derived_seed(seed, index)
    face = synth_face(face_seed, size)
    provenance = {"generator": "synthetic", "seed": seed, "face_index": index, "face_seed": face_seed}
    named = face if lookup is None else dataclasses.replace(face, label_map=lookup[face.label_map])
    real_params, shown = provenance, named
    if config["post"] == "random":
        chain = random_chain(np.random.default_rng(_derived_seed(seed, index, 0)))
        shown = dataclasses.replace(named, image=apply_post(face.image, chain))
        real_params = {**provenance, "post": chain}
    records = [make_record(shown, source_id=source_id, params=real_params, tree=tree)]
    for j in range(per_face):
        forgery_class = classes[(index * per_face + j) % len(classes)]
        forge_seed = _derived_seed(seed, index, j + 1)
        try:
            forgery = forge(face, forgery_class, seed=forge_seed, post=config["post"], tree=fict,
                            trace=config["trace"] or False)
            fake_labels = fake_label_map(face, forgery, fict)
            if lookup is not None:
                # the same geometry in the coarse vocabulary; "same map as the face" stays the same object
                fake_labels = named.label_map if fake_labels is face.label_map else lookup[fake_labels]
                maps = [named.label_map] if fake_labels is named.label_map else [named.label_map, fake_labels]
                layers = [((artifact,), region) for artifact, region in forgery.artifact_masks.items()]
                forgery = dataclasses.replace(
                    forgery, concepts=ground_truth_concepts(tree, maps, forgery.mask, layers))
            annotation = annotate(forgery.fake, real=forgery.real, landmarks=forgery.landmarks,
                                  label_map=fake_labels, tree=tree, rule=config["annotator_rule"], seed=forge_seed)
        except Exception as exc:
            raise RuntimeError(f"face {index} (face seed {face_seed}), {forgery_class} fake {j} "
                               f"(forge seed {forge_seed}): {exc}") from exc
        records.append(make_record(named, forgery, annotation, source_id=source_id, tree=tree,
                                   image_id=f"{source_id}-{forgery_class}-{j}", label_map=fake_labels,
                                   params={**provenance, "forge_seed": forge_seed, "post": config["post"]}))
    return records


def _generate_records(shards: list[list[int]], config: str) -> Iterator[dict[str, Any]]:
    """``Dataset.from_generator`` body: the records of every face index in ``shards``.

    ``shards`` is a list so that ``num_proc`` processes can each take a slice of it.
    """
    settings = json.loads(config)
    for shard in shards:
        for index in shard:
            yield from face_records(index, settings)


def _samples_batch(batch: dict[str, list], indices: list[int], seed: int, tasks: list[str],
                   concept_depth: int | None) -> dict[str, list]:
    """Batched ``.map`` body: all samples of a batch of image records, as columns."""
    columns: dict[str, list] = {name: [] for name in SAMPLE_FEATURES}
    tree, _ = concept_vocabulary(concept_depth)
    for row, index in enumerate(indices):
        record = {name: batch[name][row] for name in batch}
        record["image_index"] = index
        for sample in build_samples(record, seed=seed, tasks=tasks, tree=tree):
            for name in columns:
                columns[name].append(sample[name])
    return columns


# --- parameters, atomic folders, versions -------------------------------------------------------------


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide the data (read from metadata: importing torch is slow)."""
    versions = {"python": platform.python_version()}
    for name in ("fifa-lab", "datasets", "numpy", "torch", "pyarrow", "pycocotools", "opencv-python-headless"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _task_signature(tasks: Sequence[str]) -> str:
    """Hash of the task definitions: changing a template or a task list rebuilds the samples."""
    spec = [[TASKS[t].id, TASKS[t].granularity, list(TASKS[t].templates), getattr(TASKS[t].build, "__qualname__", "")]
            for t in tasks]
    return hashlib.sha256(json.dumps(spec).encode("utf-8")).hexdigest()[:16]


def _finished(path: Path, params: dict[str, Any]) -> bool:
    """Whether ``path`` holds a complete dataset built with exactly ``params``."""
    try:
        return json.loads((path / PARAMS_FILE).read_text(encoding="utf-8")) == params
    except (OSError, ValueError):
        return False


def _clean_leftovers(root: Path) -> None:
    """Remove what a killed build left: temporaries of :func:`fifa_lab.io.atomic_path` and scratch folders."""
    for pattern in (".*.tmp-*", ".*.old-*", f"{SCRATCH_PREFIX}*"):
        for leftover in root.glob(pattern):
            log.info("removing %s left by an interrupted build", leftover)
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


# --- building -----------------------------------------------------------------------------------------


def _split_indices(n_faces: int, seed: int, ratios: Sequence[float]) -> dict[str, list[int]]:
    by_split: dict[str, list[int]] = {split: [] for split in SPLITS}
    for index in range(n_faces):
        by_split[assign_split(source_id_of(seed, index), ratios)].append(index)
    return by_split


def _build_images(out: Path, scratch: Path, params: dict[str, Any], num_proc: int, batch_size: int) -> None:
    config = json.dumps({k: params[k] for k in ("seed", "size", "classes", "fakes_per_face", "post", "trace",
                                                 "annotator_rule", "concept_depth")})
    splits = {}
    for split, indices in _split_indices(params["n_faces"], params["seed"], params["ratios"]).items():
        if not indices:
            splits[split] = _empty(IMAGE_FEATURES)
            continue
        procs = max(1, min(num_proc, len(indices)))
        shards = [list(map(int, part)) for part in np.array_split(indices, procs)]
        fingerprint = hashlib.sha256(f"{config}|{split}|{shards}".encode("utf-8")).hexdigest()[:32]
        splits[split] = Dataset.from_generator(
            _generate_records, features=IMAGE_FEATURES, cache_dir=str(scratch), split=split,
            gen_kwargs={"shards": shards, "config": config}, num_proc=procs if procs > 1 else None,
            fingerprint=fingerprint, writer_batch_size=batch_size)
    _save(DatasetDict(splits), out, rows_per_shard=IMAGE_ROWS_PER_SHARD)


def _empty(features: Features) -> Dataset:
    """A dataset with no rows but the full schema (a split can be empty in a small build)."""
    return Dataset.from_dict({name: [] for name in features}, features=features)


def _save(datasets: DatasetDict, path: Path, rows_per_shard: int | None = None) -> None:
    """``save_to_disk`` with explicit shard counts.

    ``save_to_disk`` copies a shard in batches of up to 1000 rows, so 1000 images (~150 MB) would sit in
    memory at once; ``rows_per_shard`` bounds that. An empty split gets one shard (datasets' own
    estimate divides by the row count).
    """
    shards = {split: 1 if len(d) == 0 else (-(-len(d) // rows_per_shard) if rows_per_shard else None)
              for split, d in datasets.items()}
    datasets.save_to_disk(str(path), num_shards=shards)


def _build_samples(out: Path, scratch: Path, images: DatasetDict, params: dict[str, Any], num_proc: int,
                   batch_size: int) -> None:
    splits = {}
    for split, dataset in images.items():
        if len(dataset) == 0:
            splits[split] = _empty(SAMPLE_FEATURES)
            continue
        inputs = dataset.select_columns(list(SAMPLE_INPUTS))
        splits[split] = inputs.map(
            _samples_batch, batched=True, batch_size=batch_size, with_indices=True,
            remove_columns=list(SAMPLE_INPUTS), features=SAMPLE_FEATURES,
            fn_kwargs={"seed": params["seed"], "tasks": params["tasks"], "concept_depth": params["concept_depth"]},
            num_proc=num_proc if num_proc > 1 and len(dataset) > 1 else None,
            cache_file_name=str(scratch / f"{split}.arrow"), writer_batch_size=batch_size * 16,
            load_from_cache_file=False, desc=f"FiFa samples ({split})")
    _save(DatasetDict(splits), out)


def _build_step(root: Path, final: Path, params: dict[str, Any], make: Callable[[Path, Path], None]) -> bool:
    """Run ``make(out, scratch)`` unless ``final`` is finished with ``params``; True if it built.

    ``out`` becomes ``final`` (with ``params`` inside) only once complete; ``scratch`` holds datasets'
    intermediate Arrow files and is removed either way.
    """
    if _finished(final, params):
        log.info("%s is up to date, skipping", final)
        return False
    scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=root))
    try:
        with atomic_path(final) as out:
            make(out, scratch)
            write_json(out / PARAMS_FILE, params)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return True


def build_dataset(run_dir: str | os.PathLike, n_faces: int, seed: int = 0, size: int = 256,
                  classes: Sequence[str] = FAKE_CLASSES, fakes_per_face: int = 1, num_proc: int = 1,
                  post: str | None = "random", batch_size: int = 32, tasks: Sequence[str] | None = None,
                  ratios: Sequence[float] = SPLIT_RATIOS, trace: bool = True, annotator_rule: str = "adaptive",
                  concept_depth: int | None = None) -> DatasetPaths:
    """Generate the image records and FiFa instruction samples of ``n_faces`` synthetic faces.

    Args:
        run_dir: the run folder; outputs go to ``run_dir/data`` (see the module doc).
        n_faces: number of real faces; each also gives ``fakes_per_face`` fakes.
        seed: the one seed of faces, forgeries and samples.
        size: image side in pixels.
        classes: forgery classes the fakes cycle through.
        fakes_per_face: fakes made from each face.
        num_proc: processes generating records and samples (the data does not depend on it).
        post: post-processing of the fakes, ``"random"`` (a chain per fake) or None.
        batch_size: rows per write batch (records) and per ``.map`` batch (samples).
        tasks: task ids to build samples for; None is the FiFa-11.
        ratios: train / validation / test shares of the identities.
        trace: leave the default generator trace in every fake (:mod:`fifa_lab.forge.trace`); False makes
            fakes that differ from their real only in content, which no single-image detector can learn.
        annotator_rule: the FiFa-Annotator's mask rule (:data:`fifa_lab.annotate.mask.RULES`: ``adaptive``,
            the published ``top5``, ``otsu``), which draws the explanation masks.
        concept_depth: None names concepts with the 112 FICT leaves; a depth cuts the tree there
            (1 = 12 regions such as "eyes"), the coarse arm of the ablation (:func:`concept_vocabulary`).

    Returns:
        The paths of both datasets and the data card. A call whose parameters match a finished build
        returns at once; different parameters rebuild (the old data is replaced only once the new is done).
    """
    if isinstance(n_faces, bool) or not isinstance(n_faces, (int, np.integer)) or n_faces < 1:
        raise ValueError(f"n_faces must be a positive integer, got {n_faces!r}")
    if not classes or any(c not in FAKE_CLASSES for c in classes):
        raise ValueError(f"classes must be a non-empty subset of {FAKE_CLASSES}, got {classes!r}")
    if fakes_per_face < 0:
        raise ValueError(f"fakes_per_face must be >= 0, got {fakes_per_face}")
    if post not in ("random", None):
        raise ValueError(f"post must be 'random' or None, got {post!r}")
    task_ids = list(tasks or FIFA11)
    for task_id in task_ids:
        if task_id not in TASKS:
            raise KeyError(f"unknown task {task_id!r} (known: {', '.join(TASKS)})")
    assign_split("check", ratios)  # validates the ratios before any work
    get_rule(annotator_rule)  # unknown rule names fail here, not in a worker

    paths = data_paths(run_dir)
    paths.root.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(paths.root)
    tree, _ = concept_vocabulary(concept_depth)
    image_params = {
        "schema": SCHEMA_VERSION, "generator": "synthetic", "n_faces": int(n_faces), "seed": int(seed),
        "size": int(size), "classes": list(classes), "fakes_per_face": int(fakes_per_face), "post": post,
        "trace": DEFAULT_TRACE.to_dict() if trace else None, "ratios": [float(r) for r in ratios],
        "fict": {"name": tree.name, "leaves": len(tree.leaves())}, "concept_depth": concept_depth,
        "annotator_rule": annotator_rule,
        "fifa_lab": package_versions()["fifa-lab"],
    }
    sample_params = {**image_params, "tasks": task_ids, "task_signature": _task_signature(task_ids)}

    built = _build_step(paths.root, paths.images, image_params,
                        lambda out, scratch: _build_images(out, scratch, image_params, num_proc, batch_size))
    images = load_from_disk(str(paths.images))
    built |= _build_step(paths.root, paths.samples, sample_params,
                         lambda out, scratch: _build_samples(out, scratch, images, sample_params, num_proc,
                                                             batch_size))
    if built or not _card_matches(paths.card, sample_params):
        write_json(paths.card, data_card(images, load_from_disk(str(paths.samples)), sample_params))
    return paths


# --- data card ----------------------------------------------------------------------------------------


def _card_matches(path: Path, params: dict[str, Any]) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("parameters") == params
    except (OSError, ValueError):
        return False


def _bytes_digest(value: Any) -> Any:
    if isinstance(value, bytes):
        return hashlib.sha256(value).hexdigest()
    raise TypeError(f"cannot hash {type(value).__name__}")


def table_hash(dataset: Dataset, batch_size: int = 256) -> str:
    """SHA-256 of a dataset's content (every column, row order included), independent of its files."""
    hasher = hashlib.sha256()
    hasher.update(json.dumps(dataset.features.to_dict(), sort_keys=True).encode("utf-8"))
    for batch in dataset.with_format("arrow").iter(batch_size=batch_size):
        for name in batch.column_names:
            hasher.update(name.encode("utf-8"))
            hasher.update(json.dumps(batch.column(name).to_pylist(), sort_keys=True,
                                     default=_bytes_digest).encode("utf-8"))
    return hasher.hexdigest()


def data_card(images: DatasetDict, samples: DatasetDict, params: dict[str, Any]) -> dict[str, Any]:
    """Counts per split, class and task, R-Det answer balance, content hashes, parameters and versions."""
    card: dict[str, Any] = {"parameters": params, "seed": params["seed"], "versions": package_versions(),
                            "images": {}, "samples": {}, "r_det_answers": {}, "hash": {"images": {}, "samples": {}}}
    for split in images:
        card["images"][split] = dict(sorted(Counter(images[split]["forgery_class"]).items()))
        card["hash"]["images"][split] = table_hash(images[split])
    for split in samples:
        card["samples"][split] = dict(sorted(Counter(samples[split]["task"]).items()))
        answers = Counter(t for task, t in zip(samples[split]["task"], samples[split]["target"]) if task == "R-Det")
        card["r_det_answers"][split] = dict(sorted(answers.items()))
        card["hash"]["samples"][split] = table_hash(samples[split])
    card["totals"] = {
        "images": sum(len(d) for d in images.values()),
        "samples": sum(len(d) for d in samples.values()),
        "images_per_class": dict(sum((Counter(v) for v in card["images"].values()), Counter())),
        "samples_per_task": dict(sum((Counter(v) for v in card["samples"].values()), Counter())),
    }
    return card


def load_datasets(run_dir: str | os.PathLike) -> FiFaData:
    """The image and sample DatasetDicts and the data card of a built run folder."""
    paths = data_paths(run_dir)
    for path in (paths.images, paths.samples, paths.card):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; build the data first: "
                                    f"fifa_lab.data.build_dataset({str(run_dir)!r}, n_faces=...)")
    return FiFaData(load_from_disk(str(paths.images)), load_from_disk(str(paths.samples)),
                    json.loads(paths.card.read_text(encoding="utf-8")))
