"""FiFa-11 data: the RLE mask encoding, image records, the task registry, the dataset build and the
importers/exporters of public formats (on fixtures these tests write themselves)."""
from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset
from PIL import Image
from pycocotools import mask as mask_utils

from fifa_lab.data import build as build_module
from fifa_lab.data.build import build_dataset, load_datasets
from fifa_lab.data.formats import (
    export_dfa_instruct,
    import_dfa_instruct,
    import_ddvqa,
    import_ffpp,
    records_dataset,
    samples_dataset,
)
from fifa_lab.data.masks import RLEError, box_to_mask, decode_rle, encode_rle, mask_to_box
from fifa_lab.data.records import (
    IMAGE_FEATURES,
    REAL_TEXT,
    SPLITS,
    assign_split,
    decode_label_map,
    encode_label_map,
    fake_label_map,
    make_record,
)
from fifa_lab.annotate import annotate
from fifa_lab.faces import synth_face
from fifa_lab.fict import load_tree
from fifa_lab.forge import forge
from fifa_lab.model.fifa_mllm import parse_phrases
from fifa_lab.tasks.fifa11 import grounding_phrases
from fifa_lab.tasks import (
    FIFA11,
    IMAGE_TOKEN,
    NO_ARTIFACT,
    REGION_TOKEN,
    RSEG_ANSWER,
    SEG_TOKEN,
    TASKS,
    Task,
    build_samples,
    get_task,
    parse_boxes,
    register_task,
)

SIZE = 256
CLASSES = ("FS", "FR", "FE", "EFS")


# --- masks ----------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside pycocotools.decode
def test_rle_round_trips_random_empty_and_full_masks():
    rng = np.random.default_rng(0)
    masks = [rng.random((int(h), int(w))) < rng.random() for h, w in rng.integers(1, 70, size=(50, 2))]
    masks += [np.zeros((SIZE, SIZE), bool), np.ones((SIZE, SIZE), bool), np.ones((1, 1), bool), np.zeros((3, 0), bool)]
    for mask in masks:
        rle = encode_rle(mask)
        assert rle["size"] == list(mask.shape) and isinstance(rle["counts"], str)
        assert json.loads(json.dumps(rle)) == rle  # JSON-friendly as is
        decoded = decode_rle(rle)
        assert decoded.dtype == bool and np.array_equal(decoded, mask)
        # Still COCO: pycocotools reads it back.
        coco = {"size": rle["size"], "counts": rle["counts"].encode()}
        assert np.array_equal(mask_utils.decode(coco).astype(bool), mask)


def test_rle_accepts_uncompressed_counts_and_non_bool_masks():
    mask = np.array([[0, 1, 1], [0, 0, 1]], dtype=np.uint8)
    # Column-major runs: 0, 0 | 1, 0 | 1, 1 -> runs of zeros/ones: 2 zeros, 1 one, 1 zero, 2 ones.
    assert np.array_equal(decode_rle({"size": [2, 3], "counts": [2, 1, 1, 2]}), mask.astype(bool))
    assert encode_rle(mask * 7) == encode_rle(mask.astype(bool))


@pytest.mark.parametrize("bad, message", [
    ([1, 2], "dict with 'size' and 'counts'"),
    ({"counts": "0"}, "dict with 'size' and 'counts'"),
    ({"size": [4], "counts": "0"}, "size must be"),
    ({"size": [4, -1], "counts": "0"}, "size must be"),
    ({"size": [2, 2], "counts": "zz"}, "invalid character"),
    ({"size": [4, 4], "counts": "0"}, "cover 0 pixels"),
    ({"size": [2, 2], "counts": "0\x7f"}, "invalid character"),
    ({"size": [2, 2], "counts": 12}, "counts must be"),
    ({"size": [2, 2], "counts": [1, 2]}, "cover 3 pixels"),
    ({"size": [2, 2], "counts": [5, -1]}, "negative"),
])
def test_decode_rle_rejects_malformed_input(bad, message):
    with pytest.raises(RLEError, match=message):
        decode_rle(bad)


def test_rle_truncated_string_is_an_error():
    rle = encode_rle(np.random.default_rng(1).random((40, 40)) < 0.5)
    with pytest.raises(RLEError):
        decode_rle({"size": rle["size"], "counts": rle["counts"][:-3]})


def test_boxes():
    mask = np.zeros((20, 30), bool)
    assert mask_to_box(mask) is None
    mask[5:9, 10:17] = True
    box = mask_to_box(mask)
    assert box == (10, 5, 17, 9)
    assert np.array_equal(box_to_mask(box, mask.shape), mask)
    clipped = box_to_mask((-5, -5, 100, 3.2), (10, 10))
    assert clipped[:4].all() and not clipped[4:].any()  # fractional max takes the touched row
    with pytest.raises(ValueError, match="maximum below"):
        box_to_mask((5, 5, 1, 9), (10, 10))


# --- records --------------------------------------------------------------------------------------


def test_label_map_png_round_trip():
    labels = np.random.default_rng(2).integers(-1, 112, size=(32, 48)).astype(np.int16)
    value = encode_label_map(labels)
    assert Image.open(io.BytesIO(value["bytes"])).mode == "L"
    assert np.array_equal(decode_label_map(value), labels)
    wide = labels.copy()
    wide[0, 0] = 400  # a tree with more than 254 leaves switches to 16-bit PNG
    assert np.array_equal(decode_label_map(encode_label_map(wide)), wide)


def test_split_assignment_is_stable_and_follows_ratios():
    ids = [f"id-{k}" for k in range(3000)]
    splits = [assign_split(i) for i in ids]
    assert splits == [assign_split(i) for i in ids]
    shares = Counter(splits)
    assert abs(shares["train"] / 3000 - 0.8) < 0.03 and abs(shares["test"] / 3000 - 0.1) < 0.02
    assert {assign_split(i, (0, 0, 1)) for i in ids[:50]} == {"test"}
    with pytest.raises(ValueError, match="sum"):
        assign_split("x", (0.5, 0.2, 0.2))


def _records(n_faces: int = 3, seed: int = 0) -> list[dict]:
    """Real + one fake per class for ``n_faces`` faces, as the dataset build makes them."""
    tree = load_tree()
    out = []
    for index in range(n_faces):
        face = synth_face(seed + index, SIZE)
        source_id = f"test-{seed + index}"
        out.append(make_record(face, source_id=source_id))
        for k, forgery_class in enumerate(CLASSES):
            forgery = forge(face, forgery_class, seed=index * 10 + k)
            labels = fake_label_map(face, forgery, tree)
            annotation = annotate(forgery.fake, real=forgery.real, landmarks=forgery.landmarks, label_map=labels)
            out.append(make_record(face, forgery, annotation, source_id=source_id,
                                   image_id=f"{source_id}-{forgery_class}-{k}"))
    return out


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return _records()


def test_records_fit_the_schema_and_share_the_split_of_their_source(records):
    dataset = Dataset.from_list(records, features=IMAGE_FEATURES)
    assert len(dataset) == len(records)
    row = dataset[1]
    assert row["label"] == "fake" and row["forgery_class"] == CLASSES[0]
    assert np.asarray(row["image"]).shape == (SIZE, SIZE, 3)
    assert decode_label_map(row["label_map"]).shape == (SIZE, SIZE)
    by_source: dict[str, set[str]] = {}
    for record in records:
        by_source.setdefault(record["source_id"], set()).add(record["split"])
    assert all(len(splits) == 1 for splits in by_source.values())
    for record in records:
        truth = decode_rle(record["artifact_mask"])
        assert (record["label"] == "real") == (not truth.any())
        for concept in record["concepts"]:
            part = decode_rle(concept["mask"])
            assert not (part & ~truth).any()  # a concept's manipulated part lies inside the artifact mask
        explanation = record["explanation"]
        assert explanation["text"].count(SEG_TOKEN) == len(explanation["segments"])
        assert json.loads(record["params"])  # provenance is JSON


def test_fake_record_needs_an_annotation():
    face = synth_face(0, SIZE)
    with pytest.raises(ValueError, match="annotation"):
        make_record(face, forge(face, CLASSES[0], seed=0), source_id="x")


# --- tasks ----------------------------------------------------------------------------------------


def test_registry_holds_the_fifa11_tasks():
    assert set(FIFA11) <= set(TASKS) and len(FIFA11) == 11
    for task_id in FIFA11:
        task = get_task(task_id)
        assert len(task.templates) >= 2 and task.metrics
        assert all(IMAGE_TOKEN in t and (REGION_TOKEN in t) == task.uses_region for t in task.templates)
    with pytest.raises(KeyError, match="did you mean 'R-Det'"):
        get_task("R-det")
    with pytest.raises(ValueError, match="already registered"):
        register_task(get_task("Det"))
    with pytest.raises(ValueError, match="<image>"):
        Task("X", "image", "x", ("no image token", "<image> ok"), lambda r, g: [], ("acc",))
    with pytest.raises(ValueError, match="<region>"):
        Task("X", "region", "x", ("<image> a", "<image> b"), lambda r, g: [], ("acc",), uses_region=True)


@pytest.fixture(scope="module")
def samples(records) -> list[dict]:
    return [s for seed in range(3) for r in records for s in build_samples(r, seed=seed)]


def test_every_task_gives_well_formed_samples(records, samples):
    by_task = Counter(s["task"] for s in samples)
    assert set(by_task) == set(FIFA11)
    for sample in samples:
        assert IMAGE_TOKEN in sample["prompt"]
        assert (REGION_TOKEN in sample["prompt"]) == get_task(sample["task"]).uses_region
        assert sample["target"].count(SEG_TOKEN) == len(sample["target_masks"])
        # every mask has its phrase: in the answer, or for RSeg the concept named in the prompt
        text = f"{sample['prompt']} {sample['target']}" if sample["task"] == "RSeg" else sample["target"]
        assert text.count("<p>") == text.count("</p>") == len(sample["target_masks"])
        for mask in sample["target_masks"]:
            assert decode_rle(mask).shape == (SIZE, SIZE) and decode_rle(mask).any()
    samples_dataset(samples)  # and they fit the sample schema
    # generation's default phrase vocabulary holds every phrase a target grounds
    vocabulary = set(grounding_phrases())
    assert {p for s in samples for p in parse_phrases(s["target"])} <= vocabulary


def test_region_tasks_use_all_region_kinds(samples):
    for task_id in ("R-Det", "R-TOE", "R-AGE"):
        kinds = {s["region"]["kind"] for s in samples if s["task"] == task_id}
        assert kinds == {"concept", "mask", "box"}, task_id
    assert {s["region"]["kind"] for s in samples if s["task"] == "B-TOE"} == {"box"}
    tree = load_tree()
    for sample in samples:
        region = sample["region"]
        if region is None:
            continue
        if region["kind"] == "concept":
            assert region["concept"] in tree and tree.get(region["concept"]).name in sample["prompt"]
        if region["kind"] == "box":
            x0, y0, x1, y1 = region["box"]
            assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
            assert str(region["box"]) in sample["prompt"]
        if region["kind"] in ("concept", "mask"):
            area = decode_rle(region["mask"])
            # R-AGE masks are clipped to the region
            for mask in sample["target_masks"]:
                assert not (decode_rle(mask) & ~area).any()


def test_r_det_is_balanced_on_fakes(records):
    answers = Counter()
    for record in records:
        for sample in build_samples(record, tasks=["R-Det"]):
            answers[(record["label"], sample["target"])] += 1
    assert answers[("fake", "yes")] == answers[("fake", "no")] > 0
    assert answers[("real", "yes")] == 0 and answers[("real", "no")] > 0


def test_b_loc_boxes_lie_inside_the_image_and_cover_the_artifacts(records):
    for record in records:
        (sample,) = build_samples(record, tasks=["B-Loc"])
        if record["label"] == "real":
            assert sample["target"] == NO_ARTIFACT
            continue
        boxes = parse_boxes(sample["target"])
        assert boxes, sample["target"]
        truth = decode_rle(record["artifact_mask"])
        covered = np.zeros_like(truth)
        for x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
            covered[int(y0):int(y1), int(x0):int(x1)] = True
        assert (truth & covered).sum() >= 0.95 * truth.sum()


def test_real_images_get_sensible_targets(records):
    real = next(r for r in records if r["label"] == "real")
    targets = {s["task"]: s for s in build_samples(real)}
    assert targets["Det"]["target"] == "real" and targets["Cls"]["target"] == "real"
    assert targets["TOE"]["target"] == REAL_TEXT and targets["AGE"]["target"] == REAL_TEXT
    assert targets["Loc"]["target"] == NO_ARTIFACT and not targets["Loc"]["target_masks"]
    assert targets["R-Det"]["target"] == "no"
    assert "no sign of manipulation" in targets["R-TOE"]["target"]
    # RSeg works on real images: the mask is the named concept's visible area.
    rseg = targets["RSeg"]
    concept = json.loads(rseg["meta"])["concept"]
    assert f"<p>{load_tree().get(concept).name}</p>" in rseg["prompt"] and rseg["target"] == RSEG_ANSWER
    visible = load_tree().visible_masks(decode_label_map(real["label_map"]))[concept]
    assert np.array_equal(decode_rle(rseg["target_masks"][0]), visible)


def test_samples_are_deterministic(records):
    first = [build_samples(r, seed=5) for r in records]
    assert first == [build_samples(r, seed=5) for r in records]
    assert first != [build_samples(r, seed=6) for r in records]


# --- dataset build --------------------------------------------------------------------------------


N_FACES = 4  # one real face and one fake each; the fakes cycle through the classes


def _build(run_dir: Path, **kwargs):
    return build_dataset(run_dir, n_faces=kwargs.pop("n_faces", N_FACES), seed=kwargs.pop("seed", 0), size=SIZE,
                         classes=CLASSES, batch_size=4, **kwargs)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    _build(run_dir)
    return run_dir


def test_build_writes_loadable_datasets_and_a_matching_card(built):
    data = load_datasets(built)
    assert set(data.images) == set(SPLITS) == set(data.samples)
    card = data.card
    assert card["totals"]["images"] == sum(len(d) for d in data.images.values()) == 2 * N_FACES
    assert card["totals"]["images_per_class"] == {"real": N_FACES, **{c: N_FACES // len(CLASSES) for c in CLASSES}}
    for split in SPLITS:
        assert card["images"][split] == dict(Counter(data.images[split]["forgery_class"]))
        assert card["samples"][split] == dict(Counter(data.samples[split]["task"]))
        assert set(data.samples[split]["split"]) <= {split}
    assert set(card["totals"]["samples_per_task"]) == set(FIFA11)
    assert card["parameters"]["n_faces"] == N_FACES and card["seed"] == 0
    assert {"datasets", "numpy", "torch", "fifa-lab"} <= set(card["versions"])
    # image_index joins a sample to its record within the split
    split = max(SPLITS, key=lambda s: len(data.samples[s]))
    for sample in data.samples[split].select(range(0, len(data.samples[split]), 11)):
        assert data.images[split][sample["image_index"]]["image_id"] == sample["image_id"]
    assert sorted(p.name for p in (built / "data").iterdir()) == ["data_card.json", "images", "samples"]


def test_same_seed_same_data_and_a_second_call_skips(built, tmp_path, monkeypatch):
    _build(tmp_path / "again")
    first, second = load_datasets(built).card["hash"], load_datasets(tmp_path / "again").card["hash"]
    assert first == second

    def boom(*args, **kwargs):
        raise AssertionError("a finished build must not generate again")

    monkeypatch.setattr(build_module, "face_records", boom)
    monkeypatch.setattr(build_module, "build_samples", boom)
    _build(built)  # same parameters: nothing is regenerated


def test_interrupted_build_leaves_no_partial_dataset_and_resumes(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    leftover = run_dir / "data" / ".images.tmp-99999"  # as if a process was killed mid-write
    leftover.mkdir(parents=True)
    calls = {"n": 0}

    def failing_annotate(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt("simulated interruption")
        return annotate(*args, **kwargs)

    monkeypatch.setattr(build_module, "annotate", failing_annotate)
    with pytest.raises(KeyboardInterrupt):
        _build(run_dir)
    data_dir = run_dir / "data"
    assert not (data_dir / "images").exists() and not (data_dir / "samples").exists()
    assert not (data_dir / "data_card.json").exists()

    # Images finish, samples are interrupted: the next call keeps the images and builds the samples.
    monkeypatch.setattr(build_module, "annotate", annotate)
    real_build_samples = build_module.build_samples

    def failing_samples(*args, **kwargs):
        raise KeyboardInterrupt("simulated interruption")

    monkeypatch.setattr(build_module, "build_samples", failing_samples)
    with pytest.raises(KeyboardInterrupt):
        _build(run_dir)
    assert (data_dir / "images").exists() and not (data_dir / "samples").exists()
    stamp = (data_dir / "images" / "fifa_build.json").stat().st_mtime_ns

    monkeypatch.setattr(build_module, "build_samples", real_build_samples)
    monkeypatch.setattr(build_module, "face_records", lambda *a, **k: pytest.fail("images must not be rebuilt"))
    _build(run_dir)
    assert (data_dir / "images" / "fifa_build.json").stat().st_mtime_ns == stamp
    assert load_datasets(run_dir).card["totals"]["images"] == 2 * N_FACES
    assert sorted(p.name for p in data_dir.iterdir()) == ["data_card.json", "images", "samples"]


def test_changed_parameters_rebuild(tmp_path):
    run_dir = tmp_path / "small"
    _build(run_dir, n_faces=2)
    assert load_datasets(run_dir).card["totals"]["images"] == 2 * 2
    _build(run_dir, n_faces=3)
    assert load_datasets(run_dir).card["totals"]["images"] == 2 * 3


def test_coarse_vocabulary_and_top5_rule_change_only_the_annotations(built, tmp_path):
    _build(tmp_path / "coarse", concept_depth=1, annotator_rule="top5")
    fine, coarse = load_datasets(built), load_datasets(tmp_path / "coarse")
    assert coarse.card["parameters"]["fict"] == {"name": "fict-112-depth1", "leaves": 12}
    assert coarse.card["parameters"]["annotator_rule"] == "top5"
    assert fine.card["parameters"]["annotator_rule"] == "adaptive" and fine.card["parameters"]["concept_depth"] is None
    regions = {c.id for c in load_tree().children(load_tree().root)}
    for split in SPLITS:
        a, b = fine.images[split], coarse.images[split]
        assert a["image_id"] == b["image_id"]
        for left, right in zip(a, b):
            # the same forgery (pixels and ground-truth mask); only what the concepts are called changes
            assert np.array_equal(np.array(left["image"]), np.array(right["image"]))
            assert left["artifact_mask"] == right["artifact_mask"]
            assert decode_label_map(right["label_map"]).max() < 12
            assert {c["concept"] for c in right["concepts"]} <= regions
            if left["label"] == "fake":
                assert json.loads(right["params"])["annotator_rule"] == "top5"
                # the published rule keeps 5% of the pixels
                masks = [decode_rle(s["mask"]) for s in right["explanation"]["segments"]]
                if masks:
                    share = np.logical_or.reduce(masks).mean()
                    assert 0.0 < share <= 0.051


def test_build_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n_faces"):
        build_dataset(tmp_path, n_faces=0)
    with pytest.raises(ValueError, match="classes"):
        build_dataset(tmp_path, n_faces=1, classes=("XX",))
    with pytest.raises(KeyError, match="unknown task"):
        build_dataset(tmp_path, n_faces=1, tasks=["Nope"])
    with pytest.raises(ValueError, match="unknown mask rule"):
        build_dataset(tmp_path, n_faces=1, annotator_rule="median")
    with pytest.raises(ValueError, match="depth"):
        build_dataset(tmp_path, n_faces=1, concept_depth=0)
    with pytest.raises(FileNotFoundError, match="build the data first"):
        load_datasets(tmp_path / "nothing")


# --- formats --------------------------------------------------------------------------------------


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_import_ddvqa(tmp_path):
    data = {
        "1_000_001": {
            "0": {"question": "Does the image looks real/fake?", "answer": ["The image looks fake. Blurry mouth.",
                                                                             "The image looks fake. Odd skin."]},
            "1": {"question": "Does the person's skin look real/fake?",
                  "answer": ["The person's skin looks fake. The skin is overly smooth."]},
            "2": {"question": "Do the person's eyes look real/fake?", "answer": ["The person's eyes look real."]},
            "3": {"question": "Does the person's aura look real/fake?", "answer": ["It looks fake."]},
        },
        "5_001": {"0": {"question": "Does the image looks real/fake?", "answer": ["The image looks real."]}},
        "5_002": {"0": {"question": "Does the image looks real/fake?", "answer": ["The image looks real."]}},
    }
    json_path = tmp_path / "Face2Face.json"
    json_path.write_text(json.dumps(data))
    frames = tmp_path / "frames"
    _write_png(frames / "1_000_001.png", synth_face(0, 64).image)
    _write_png(frames / "Original" / "001" / "0000.png", synth_face(1, 64).image)  # method/video/frame layout
    # 5_002 has no frame: skipped with a reason

    samples = import_ddvqa(json_path, frames)
    assert [key for key, _ in samples.skipped] == ["1_000_001/3", "5_002"]
    by_id = {s["sample_id"]: s for s in samples}
    assert by_id["ddvqa-1_000_001-1_000_001/0/0/Det"]["target"] == "fake"
    assert by_id["ddvqa-1_000_001-1_000_001/0/0/TOE"]["target"] == "The image looks fake. Blurry mouth."
    skin = by_id["ddvqa-1_000_001-1_000_001/1/0/R-Det"]
    assert skin["target"] == "yes" and skin["region"]["concept"] == "face" and REGION_TOKEN in skin["prompt"]
    eyes = by_id["ddvqa-1_000_001-1_000_001/2/0/R-Det"]
    assert eyes["target"] == "no" and eyes["region"] == {"kind": "concept", "concept": "eyes", "mask": None, "box": None}
    assert by_id["ddvqa-5_001-0000/0/0/Det"]["target"] == "real"
    assert json.loads(by_id["ddvqa-1_000_001-1_000_001/0/0/TOE"]["meta"])["references"][1].endswith("Odd skin.")
    # The swap 000_001 and the original 001 show the same identity: same split.
    assert len({s["split"] for s in samples}) == 1
    samples_dataset(samples)
    assert len(import_ddvqa(json_path, frames, one_per_answer=True)) == len(samples) + 1  # one more TOE


def test_malformed_files_raise_value_errors_naming_the_file(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        import_ddvqa(broken, tmp_path)
    with pytest.raises(ValueError, match="broken.json"):
        import_dfa_instruct(broken)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"abc": {}}))
    with pytest.raises(ValueError, match="wrong.json.*manipulate id"):
        import_ddvqa(wrong, tmp_path)
    wrong.write_text(json.dumps([{"id": "a", "image": "a.png", "conversations": [{"from": "gpt", "value": "x"},
                                                                                {"from": "human", "value": "y"}]}]))
    with pytest.raises(ValueError, match="wrong.json: conversation 0: turns must alternate"):
        import_dfa_instruct(wrong)
    wrong.write_text(json.dumps([{"id": "a", "image": "a.png", "subset": "XX",
                                  "conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}]}]))
    with pytest.raises(ValueError, match="unknown subset"):
        import_dfa_instruct(wrong)


def test_dfa_instruct_round_trip(records, tmp_path):
    samples = [s for r in records for s in build_samples(r)]
    path = tmp_path / "dfa" / "conversations.json"
    counts = export_dfa_instruct(samples, path, images=records[:2])
    n_images = len(records)
    assert counts["DF-D"] == counts["DF-C"] == counts["AD"] == n_images
    assert counts["FC"] == n_images
    needs_masks = [s for s in samples if SEG_TOKEN in s["target"] or (s["region"] or {}).get("kind") == "mask"]
    assert counts["skipped"] == sum(s["task"] not in ("Det", "Cls", "TOE") for s in needs_masks) > 0
    conversations = json.loads(path.read_text())
    for conversation in conversations:
        turns = conversation["conversations"]
        assert turns[0]["value"].startswith(f"{IMAGE_TOKEN}\n")
        assert all(IMAGE_TOKEN not in t["value"] for t in turns[1:])
        assert all(REGION_TOKEN not in t["value"] and SEG_TOKEN not in t["value"] for t in turns)
    assert (path.parent / "images" / f"{records[0]['image_id']}.png").is_file()

    imported = import_dfa_instruct(path)
    originals = {s["sample_id"]: s for s in samples}
    assert len(imported) == sum(len(c["conversations"]) // 2 for c in conversations)
    for sample in imported:
        original = originals[sample["sample_id"]]
        assert (sample["task"], sample["image_id"], sample["target"], sample["split"]) == \
               (original["task"], original["image_id"], original["target"], original["split"])
        assert IMAGE_TOKEN in sample["prompt"]
    assert {s["task"] for s in imported} >= {"Det", "Cls", "TOE", "R-Det", "B-Loc"}
    # Exporting what was imported gives the same file.
    again = tmp_path / "again.json"
    export_dfa_instruct(imported, again)
    assert json.loads(again.read_text()) == conversations


def test_import_ffpp(tmp_path):
    root = tmp_path / "ffpp"
    originals = root / "original_sequences" / "youtube" / "c23" / "frames"
    manipulated = root / "manipulated_sequences"
    faces = {video: synth_face(seed, SIZE) for video, seed in (("000", 0), ("001", 1))}
    for video, face in faces.items():
        _write_png(originals / video / "0000.png", face.image)
    _write_png(originals / "002" / "0000.png", np.full((SIZE, SIZE, 3), 128, np.uint8))  # no face in it
    forgery = forge(faces["000"], "FS", seed=3)
    _write_png(manipulated / "Deepfakes" / "c23" / "frames" / "000_001" / "0000.png", forgery.fake)
    _write_png(manipulated / "Deepfakes" / "masks" / "frames" / "000_001" / "0000.png",
               forgery.mask.astype(np.uint8) * 255)
    _write_png(manipulated / "Face2Face" / "c23" / "frames" / "001_000" / "0000.png", faces["001"].image)  # no mask
    (manipulated / "Mystery" / "c23" / "frames").mkdir(parents=True)

    records = import_ffpp(root, size=SIZE)
    reasons = dict(records.skipped)
    assert "no face" in reasons[str(originals / "002" / "0000.png")]
    assert "no mask" in next(r for p, r in reasons.items() if "Face2Face" in p)
    assert any("unknown method" in r for p, r in reasons.items() if p.endswith("Mystery"))
    by_id = {r["image_id"]: r for r in records}
    assert set(by_id) == {"ffpp-original-000-0000", "ffpp-original-001-0000", "ffpp-Deepfakes-000_001-0000"}
    fake = by_id["ffpp-Deepfakes-000_001-0000"]
    assert fake["forgery_class"] == "FS" and fake["forgery_method"] == "Deepfakes" and fake["label"] == "fake"
    # Synthetic faces are already in the canonical placement, so the aligned mask stays close to the forged one.
    mask = decode_rle(fake["artifact_mask"])
    iou = (mask & forgery.mask).sum() / (mask | forgery.mask).sum()
    assert iou > 0.7 and fake["concepts"]
    assert fake["explanation"]["text"].count(SEG_TOKEN) == len(fake["explanation"]["segments"])
    # The swap pair 000_001 joins identities 000 and 001: one split for all three records.
    assert len({r["split"] for r in records}) == 1 and len({r["source_id"] for r in records}) == 1
    assert len(records_dataset(records)) == 3
    with pytest.raises(Exception, match="no face"):
        import_ffpp(root, size=SIZE, on_error="raise")
    with pytest.raises(FileNotFoundError, match="not a FaceForensics"):
        import_ffpp(tmp_path / "empty")
