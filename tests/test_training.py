"""Training recipes, the CIFAR-10 loader and augmentation, clear errors, exact resume, evaluation and plots."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from models import create_model
from toolkit import cifar10 as cifar_files
from toolkit.errors import UsageError
from training import cifar10, evaluate, plot, train
from training.classifier import load_classifier_checkpoint
from training.recipes import RECIPES, get_recipe
from training.schedule import PaperSchedule
from training.steps import GraphedTrainStep, train_step

TINY = ["--max-train-samples", "512", "--max-eval-samples", "200", "--log-every", "2"]


def test_every_paper_recipe_is_listed_in_help(capsys):
    expected = (
        [f"cifar10_resnet{depth}" for depth in (20, 32, 44, 56, 110, 1202)]
        + [f"cifar10_plain{depth}" for depth in (20, 32, 44, 56, 110)]
        + [f"imagenet_resnet{depth}" for depth in (18, 34, 50, 101, 152)]
        + ["imagenet_plain18", "imagenet_plain34"]
    )
    assert sorted(RECIPES) == sorted(expected)
    with pytest.raises(SystemExit):
        train.main(["--help"])
    help_text = capsys.readouterr().out
    assert all(name in help_text for name in expected)
    assert "(default:" in help_text


def test_recipes_follow_the_paper():
    cifar = get_recipe("cifar10_resnet110")
    assert (cifar.batch_size, cifar.lr, cifar.momentum, cifar.weight_decay) == (128, 0.1, 0.9, 1e-4)
    assert (cifar.max_iters, cifar.milestone_iters, cifar.warmup_lr) == (64_000, (32_000, 48_000), 0.01)
    assert get_recipe("cifar10_resnet56").warmup_lr is None
    imagenet = get_recipe("imagenet_resnet50")
    assert (imagenet.batch_size, imagenet.lr, imagenet.lr_schedule, imagenet.model) == (256, 0.1, "plateau", "resnet50")
    with pytest.raises(UsageError, match="choose from"):
        get_recipe("cifar10_resnet21")


def test_milestones_scale_with_epochs():
    recipe = get_recipe("cifar10_resnet20")
    assert train.plan_steps(recipe, None, 391) == (164, 64_000, [32_000, 48_000])
    assert train.plan_steps(recipe, 10, 100) == (10, 1000, [500, 750])
    step_recipe = get_recipe("imagenet_resnet18").with_overrides(lr_schedule="step")
    assert train.plan_steps(step_recipe, None, 5) == (90, 450, [30, 60])
    assert train.plan_steps(step_recipe, 9, 5) == (9, 45, [3, 6])


def test_warmup_ends_when_training_error_drops_below_80_percent():
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    schedule = PaperSchedule(optimizer, get_recipe("cifar10_resnet110"), 1000, [500, 750])
    schedule.before_step(0, 0)
    assert schedule.lr == pytest.approx(0.01)
    for step in range(50):
        schedule.after_step({"train_error": 0.9}, step)
    assert schedule.warming_up
    step = 50
    while schedule.warming_up:
        schedule.after_step({"train_error": 0.5}, step)
        step += 1
    schedule.before_step(step, 0)
    assert schedule.lr == pytest.approx(0.1) and step < 70
    schedule.before_step(600, 1)
    assert schedule.lr == pytest.approx(0.01)
    restored = PaperSchedule(optimizer, get_recipe("cifar10_resnet110"), 1000, [500, 750])
    restored.load_state_dict(schedule.state_dict())
    assert not restored.warming_up


def test_cifar_loader_reads_the_real_files(cifar_dir):
    train_split = cifar10.load_cifar10(cifar_dir, train=True)
    test_split = cifar10.load_cifar10(cifar_dir, train=False)
    assert train_split.images.shape == (50_000, 3, 32, 32) and train_split.images.dtype == torch.uint8
    assert len(test_split) == 10_000 and torch.bincount(test_split.labels).tolist() == [1000] * 10
    assert cifar10.read_label_names(cifar_dir)[:3] == ["airplane", "automobile", "bird"]
    subset, val = cifar10.split_train_val(train_split, 5000, None)
    assert len(subset) == 45_000 and len(val) == 5000
    mean = cifar10.mean_image(subset)
    assert mean.shape == (3, 32, 32) and 0.3 < float(mean.mean()) < 0.6
    assert float(mean.std()) > 0.005  # a per-pixel image, not one value per channel


def test_every_form_of_cifar10_reads_the_same(cifar_dir, tmp_path):
    # the data folder's form (in CI the JPEG copies' archive), that archive unpacked, and the official python layout
    # written from the same images: the trainer, the evaluator and the exporters read each one the same way
    images, labels = cifar_files.read_split(cifar_dir, "test")
    unpacked = tmp_path / "jpegs"
    for data, label in cifar_files.encoded(cifar_dir, "test")[:200]:
        folder = unpacked / "test" / cifar_files.CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{len(list(folder.iterdir())):04d}.jpg").write_bytes(data)
    python = tmp_path / "python" / cifar_files.PYTHON_FOLDER
    python.mkdir(parents=True)
    for name in (*cifar_files.TRAIN_FILES, cifar_files.TEST_FILE):
        batch = {"data": images.reshape(len(images), -1), "labels": labels.tolist()}
        (python / name).write_bytes(pickle.dumps(batch))
    from_python = cifar10.load_cifar10(tmp_path / "python", train=False)
    assert torch.equal(from_python.images, torch.from_numpy(images))
    assert torch.equal(from_python.labels, torch.from_numpy(labels))
    first, first_labels = cifar_files.read_split(unpacked, "test")
    assert len(first) == 200 and (first_labels == 0).all()  # the first 200 of the first class, in file order
    assert (first == images[labels == 0][:200]).all()


def test_augmentation_is_pad_crop_flip():
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    mean = torch.rand(3, 32, 32)
    normalised = cifar10.normalize(images, mean)
    centre = cifar10.augment(images, mean, torch.tensor([[4, 4], [4, 4]]), torch.tensor([False, True]))
    assert torch.equal(centre[0], normalised[0])
    assert torch.equal(centre[1], normalised[1].flip(-1))
    corner = cifar10.augment(images, mean, torch.tensor([[0, 8], [8, 0]]), torch.tensor([False, False]))
    assert torch.equal(corner[0, :, :4], torch.zeros(3, 4, 32))  # zero padding on top
    assert torch.equal(corner[0, :, 4:, :28], normalised[0, :, :28, 4:])  # shifted down 4, left 4
    assert torch.equal(corner[0, :, :, 28:], torch.zeros(3, 32, 4))


def test_missing_or_wrong_data_exits_clearly_and_writes_nothing(tmp_path):
    output = tmp_path / "run"
    args = ["--recipe", "cifar10_resnet20", "--output-dir", str(output)]
    with pytest.raises(UsageError, match="make data"):
        train.main([*args, "--data-dir", str(tmp_path / "nowhere")])
    (tmp_path / "wrong" / "cifar-10-batches-py").mkdir(parents=True)
    with pytest.raises(UsageError, match="lacks data_batch_1"):
        train.main([*args, "--data-dir", str(tmp_path / "wrong")])
    folder = tmp_path / "broken" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in (*cifar_files.TRAIN_FILES, cifar_files.TEST_FILE):
        (folder / name).write_bytes(b"\x80\x04truncated")
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(index) for index in range(10)]}))
    with pytest.raises(UsageError, match="cannot read CIFAR-10 file .*data_batch_1"):
        train.main([*args, "--data-dir", str(tmp_path / "broken")])
    assert not output.exists()


def test_graphed_step_matches_the_plain_step_on_cpu():
    # Without CUDA the graphed step replays eagerly from its static buffers: same weights, loss and errors as
    # train_step over full batches, smaller last batches (run outside the graph) and an lr change (a new capture).
    torch.manual_seed(0)
    images, labels = torch.randn(40, 3, 32, 32), torch.randint(0, 10, (40,))
    batches = [(images[:16], labels[:16]), (images[16:32], labels[16:32]), (images[32:], labels[32:])] * 2
    models, results = [], []
    for graphed in (False, True):
        torch.manual_seed(1)
        model = create_model("cifar_resnet20")
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        step = GraphedTrainStep(model, optimizer, warmup_steps=1) if graphed else None
        outputs = []
        for index, (x, y) in enumerate(batches):
            optimizer.param_groups[0]["lr"] = 0.1 if index < 4 else 0.01
            loss, wrong = step(x, y) if step else train_step(model, x, y, optimizer)
            outputs.append((loss.item(), wrong.item()))
        models.append(model)
        results.append(outputs)
    assert (step.captures, step.replays) == (2, 3)  # steps 2 and 5 capture; 2, 4, 5 replay; 1 warms up; 3, 6 eager
    assert results[0] == results[1]
    for (name, plain), graphed in zip(models[0].state_dict().items(), models[1].state_dict().values(), strict=True):
        assert torch.equal(plain, graphed), name


def test_cuda_graph_option_needs_a_gpu(cifar_dir, tmp_path):
    with pytest.raises(UsageError, match="--cuda-graph needs one CUDA device"):
        train.main(
            [
                "--recipe",
                "cifar10_resnet20",
                "--data-dir",
                str(cifar_dir),
                "--output-dir",
                str(tmp_path / "run"),
                "--device",
                "cpu",
                "--cuda-graph",
                *TINY,
            ]
        )


def test_resume_continues_exactly(cifar_dir, tmp_path):
    common = [
        "--recipe",
        "cifar10_resnet20",
        "--data-dir",
        str(cifar_dir),
        "--epochs",
        "2",
        "--val-split",
        "200",
        *TINY,
    ]
    train.main([*common, "--output-dir", str(tmp_path / "straight")])
    train.main([*common, "--output-dir", str(tmp_path / "split"), "--stop-after-epochs", "1"])
    with pytest.raises(UsageError, match="--resume"):
        train.main([*common, "--output-dir", str(tmp_path / "split")])
    train.main(["--output-dir", str(tmp_path / "split"), "--resume"])  # every other option as the run recorded it
    straight = load_classifier_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    resumed = load_classifier_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")
    assert straight["step"] == resumed["step"] == 8 and resumed["epoch"] == 2
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    assert straight["metrics"][-1]["train_loss"] == resumed["metrics"][-1]["train_loss"]
    rows = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    assert {"train_loss", "train_error", "test_error", "test_top5_error", "lr", "images_per_s", "wall_time"} <= set(
        rows[0]
    )
    best = load_classifier_checkpoint(tmp_path / "split" / "checkpoints" / "best.pt")  # picked on validation data
    assert best["run"]["selection"] == "val_error"
    assert best["run"]["best"] == min(row["val_error"] for row in rows)
    assert resumed["preprocess"]["mean"].shape == (3, 32, 32)
    assert set(resumed["rng"]) == {"torch", "cuda", "python", "numpy"}
    plotted = plot.main([str(tmp_path / "straight"), str(tmp_path / "split"), "--output", str(tmp_path / "fig.png")])
    assert plotted.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_rejects_foreign_checkpoints(tmp_path, cifar_dir):
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(UsageError, match="not a resnet-lab checkpoint"):
        evaluate.main(["--checkpoint", str(foreign), "--data-dir", str(cifar_dir)])
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(UsageError, match="truncated"):
        evaluate.main(["--checkpoint", str(truncated), "--data-dir", str(cifar_dir)])
