import dataclasses
import itertools
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from synctalk_lib import checkpoint, data, dataset, generators, preprocess, syncnet, train
from synctalk_lib.config import get_config

TINY = get_config("tiny", {"train.batch_size": 2, "train.window": 2, "train.val_every": 5,
                           "train.save_every": 5, "train.augment": False})


@pytest.fixture(scope="module")
def person(face_video, tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    ds = preprocess.preprocess("face", root=root, cfg=get_config("tiny"), video=face_video,
                               progress=False)
    feats = np.random.default_rng(0).normal(size=(ds.n_frames, 512)).astype(np.float32)
    return ds, feats


def test_split_keeps_a_contiguous_tail_out():
    split = data.split_frames(100, 0.1, 0.05)
    assert split.heldout.tolist() == list(range(90, 100))
    assert split.val.tolist() == list(range(85, 90))
    assert split.train.tolist() == list(range(85))
    with pytest.raises(ValueError, match="too few"):
        data.split_frames(3, 0.5, 0.5)


def test_batches_are_reproducible_and_ranks_disjoint():
    a = train.batch_indices(7, 50, 4, seed=1, rank=0, world=2)
    b = train.batch_indices(7, 50, 4, seed=1, rank=1, world=2)
    assert np.array_equal(a, train.batch_indices(7, 50, 4, seed=1, rank=0, world=2))
    assert not set(a) & set(b)
    assert not np.array_equal(a, train.batch_indices(7, 50, 4, seed=2, rank=0, world=2))


def test_samples_have_the_documented_shapes(person):
    ds, feats = person
    patches = data.model_patches(ds, TINY.model.image_size)
    split = data.split_frames(ds.n_frames, 0.1, 0.05)
    sync_audio = syncnet.audio_windows(TINY.syncnet, ds.mel_windows())
    samples = data.GeneratorSamples.for_indices(patches, feats, sync_audio, split.train,
                                                TINY, augment=True)
    item = samples[0]
    s = TINY.model.image_size
    assert item["inputs"].shape == (2, 6, s, s) and item["targets"].shape == (2, 3, s, s)
    assert item["audio"].shape == (2, 16, 512) and item["mel"].shape == (1, 80, 16)
    x0, y0, x1, y1 = data.crop.mask_rect(TINY.crop, s)
    assert item["inputs"][:, 3:, y0:y1, x0:x1].abs().sum() == 0
    assert 0 <= item["inputs"].min() and item["inputs"].max() <= 1


def test_tiny_generator_overfits_a_few_frames(person, tmp_path):
    ds, feats = person
    cfg = TINY.override({"train.heldout_fraction": 0.5, "train.val_fraction": 0.3,
                         "train.lr": 3e-3, "train.perceptual_weight": 0.0,
                         "train.best_min_val_frames": 1})
    result = train.train_generator(ds, cfg, tmp_path, feats, steps=60, progress=False,
                                   log_every=5)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.5 * losses[0], losses
    assert (tmp_path / generators.BEST).is_file()


def test_too_short_a_validation_block_keeps_no_best(person, tmp_path):
    ds, feats = person
    cfg = TINY.override({"train.val_fraction": 0.05, "train.perceptual_weight": 0.0})
    assert ds.n_frames * 0.05 < cfg.train.best_min_val_frames
    result = train.train_generator(ds, cfg, tmp_path, feats, steps=10, progress=False)
    assert not (tmp_path / generators.BEST).exists()
    assert result.best == result.checkpoint and result.checkpoint.is_file()


def test_resume_continues_exactly(person, tmp_path):
    ds, feats = person
    straight = train.train_generator(ds, TINY, tmp_path / "a", feats, steps=10, progress=False,
                                     log_every=5)
    train.train_generator(ds, TINY, tmp_path / "b", feats, steps=5, progress=False, log_every=5)
    resumed = train.train_generator(ds, TINY, tmp_path / "b", feats, steps=10, progress=False,
                                    log_every=5)
    assert resumed.step == straight.step == 10
    a = checkpoint.load_checkpoint(straight.checkpoint, kind="generator")["model"]
    b = checkpoint.load_checkpoint(resumed.checkpoint, kind="generator")["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    assert straight.history[-1]["loss"] == pytest.approx(resumed.history[-1]["loss"], rel=1e-5)


def test_resume_with_the_mouth_discriminator_continues_exactly(person, tmp_path):
    ds, feats = person
    cfg = TINY.override({"train.gan_weight": 0.1, "train.gan_start": 3})
    straight = train.train_generator(ds, cfg, tmp_path / "a", feats, steps=10, progress=False,
                                     log_every=5)
    train.train_generator(ds, cfg, tmp_path / "b", feats, steps=5, progress=False, log_every=5)
    resumed = train.train_generator(ds, cfg, tmp_path / "b", feats, steps=10, progress=False,
                                    log_every=5)
    assert {"adversarial", "discriminator"} <= set(straight.history[-1])
    a = checkpoint.load_checkpoint(straight.checkpoint, kind="generator")
    b = checkpoint.load_checkpoint(resumed.checkpoint, kind="generator")
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-5, atol=1e-6)
    for key, value in a["aux"]["discriminator"]["model"].items():
        torch.testing.assert_close(value, b["aux"]["discriminator"]["model"][key], rtol=1e-5,
                                   atol=1e-6)


def test_mouth_discriminator_learns_to_tell_blurred_mouths(person):
    ds, _ = person
    cfg = TINY.override({"train.gan_lr": 2e-3})
    s = cfg.model.image_size
    patches = torch.from_numpy(np.asarray(data.model_patches(ds, s)[:16])).permute(0, 3, 1, 2)
    real = patches.float() / 255
    blurred = torch.nn.functional.avg_pool2d(real, 5, stride=1, padding=2,
                                             count_include_pad=False)
    adversary = train.Adversary(cfg, data.mouth_box(ds, s), torch.device("cpu"))
    first = adversary.learn(blurred, real)
    for _ in range(60):
        last = adversary.learn(blurred, real)
    assert last < 0.5 * first
    # the generator's term is high for blurred mouths and lower for real ones
    assert adversary.generator_term(blurred) > adversary.generator_term(real) + 0.2
    assert all(p.requires_grad for p in adversary.net.parameters())


def test_checkpoint_for_other_settings_is_a_clear_error(person, tmp_path):
    ds, feats = person
    result = train.train_generator(ds, TINY, tmp_path, feats, steps=5, progress=False)
    wider = TINY.override({"model.channels": "16,32,64,128,256"})
    with pytest.raises(checkpoint.CheckpointError, match="model.channels"):
        generators.load_generator(result.checkpoint, wider)
    with pytest.raises(checkpoint.CheckpointError, match="model.channels"):
        train.train_generator(ds, wider, tmp_path, feats, steps=6, progress=False)
    with pytest.raises(checkpoint.CheckpointError, match="expected a syncnet"):
        checkpoint.load_checkpoint(result.checkpoint, kind="syncnet")


def test_feature_count_mismatch_is_a_clear_error(person, tmp_path):
    ds, feats = person
    with pytest.raises(train.TrainError, match="recompute the features"):
        train.train_generator(ds, TINY, tmp_path, feats[:-3], steps=1, progress=False)


def test_unpreprocessed_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(dataset.PreprocessError, match="not preprocessed"):
        train.train_person("nobody", TINY, dataset_root=tmp_path, checkpoints_root=tmp_path)


@pytest.mark.slow
def test_torchrun_two_processes_with_gloo(person, tmp_path):
    """The CLI under torchrun: two CPU processes, DDP over gloo, rank 0 writes."""
    ds, _ = person
    root = ds.paths.folder.parent
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_port=29517", "-m", "synctalk_lib", "train", "--name", "face",
           "--preset", "tiny", "--root", str(root), "--checkpoints", str(tmp_path),
           "--steps", "4", "--syncnet-steps", "10", "--no-progress",
           "--set", "train.save_every=2", "--set", "train.batch_size=2",
           "--set", "train.window=5", "--set", "syncnet.val_fraction=0.3",
           "--set", "train.heldout_fraction=0.0", "--set", "train.val_fraction=0.2"]
    run = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=600,
                         cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 0, run.stderr[-3000:]
    state = checkpoint.load_checkpoint(tmp_path / "face" / "generator_0000004.pt",
                                       kind="generator")
    assert state["step"] == 4
    assert (tmp_path / "face" / "syncnet.pt").is_file()


def test_time_budget_cuts_the_step_count_and_never_raises_it(caplog):
    tcfg = get_config("tiny").train
    caplog.set_level(logging.INFO, logger="synctalk_lib.train")
    # 20 steps in 20 s: a one-minute budget leaves 40 s, i.e. 40 more steps
    budget = dataclasses.replace(tcfg, minutes=1.0)
    assert train._fit_budget(20, 3000, 0, 20.0, budget, rank=0, world=1) == 60
    assert "60 steps fit (not 3000)" in caplog.text and "about 1 min more" in caplog.text
    assert train._fit_budget(20, 50, 0, 20.0, budget, rank=0, world=1) == 50  # fits anyway
    assert train._fit_budget(20, 3000, 0, 90.0, budget, rank=0, world=1) == 20  # spent
    assert train._fit_budget(20, 3000, 0, 20.0, tcfg, rank=0, world=1) == 3000  # no budget


def test_time_budget_is_fitted_again_as_the_run_speeds_up_until_the_lr_decays(caplog):
    """A slow start cut the count; later fits at the rate measured so far give steps back
    (never past the planned count), fit again every REFIT_EVERY steps, not inside the
    decay (its schedule depends on the count), and log only a change above 2 %."""
    tcfg = dataclasses.replace(get_config("tiny").train, minutes=10.0)
    caplog.set_level(logging.INFO, logger="synctalk_lib.train")
    first = train._fit_budget(20, 3000, 0, 20.0, tcfg, rank=0, world=1)  # 1 s a step
    assert first == 600
    # 300 steps later at 0.5 s a step overall: 170 s spent, 430 s left = 860 steps more
    again = train._fit_budget(320, 3000, 0, 160.0, tcfg, rank=0, world=1, said=first)
    assert again == 320 + int((600 - 160.0) / 0.5) <= 3000
    assert f"{again} steps fit" in caplog.text
    caplog.clear()
    assert train._fit_budget(320, 3000, 0, 160.0, tcfg, rank=0, world=1, said=again) == again
    assert caplog.text == ""  # the same count is not said twice
    assert train._fit_budget(320, 1000, 0, 160.0, tcfg, rank=0, world=1, said=first) == 1000
    steps = [s for s in range(2000) if train._refit_now(s, 0, 2000, tcfg)]
    assert steps[:3] == [train.TIMING_STEPS, train.TIMING_STEPS + train.REFIT_EVERY,
                         train.TIMING_STEPS + 2 * train.REFIT_EVERY]
    decaying = dataclasses.replace(tcfg, lr_decay=0.5)
    assert max(s for s in range(2000) if train._refit_now(s, 0, 2000, decaying)) < 1000
    assert not train._refit_now(2000, 0, 2000, tcfg)


def test_audio_noise_reaches_the_generator_in_training_only():
    """train.audio_noise s: the audio the generator hears in a training step is the batch's
    plus noise of std s times each feature's own std; in eval mode (validation) it is not."""
    cfg = get_config("tiny", {"train.audio_noise": 2.0, "train.perceptual_weight": 0.0,
                              "train.window": 1})
    f = 512
    std = np.linspace(0.5, 3.0, f).astype(np.float32)
    size = cfg.model.image_size
    loss = train.StepLoss(cfg, (0, 0, size, size), None, torch.device("cpu"), audio_std=std)
    heard = []

    class Spy(torch.nn.Module):
        def forward(self, x, audio):
            heard.append(audio)
            return x[:, :3] * 1.0

    batch = {"inputs": torch.rand(64, 1, 6, size, size), "targets": torch.rand(64, 1, 3, size, size),
             "audio": torch.zeros(64, 1, data.AUDIO_WINDOW, f), "mel": torch.zeros(64, 1)}
    spy = Spy().train()
    loss(spy, batch, step=0)
    noise = heard[-1].reshape(64, data.AUDIO_WINDOW, f)
    measured = noise.std(dim=(0, 1)).numpy()
    np.testing.assert_allclose(measured, 2.0 * std, rtol=0.15)
    spy.eval()
    loss(spy, batch, step=0)
    assert float(heard[-1].abs().max()) == 0.0
    quiet = train.StepLoss(get_config("tiny"), (0, 0, size, size), None, torch.device("cpu"),
                           audio_std=std)
    quiet(spy.train(), batch, step=0)
    assert float(heard[-1].abs().max()) == 0.0  # audio_noise 0: the batch as it is


def test_learning_rate_holds_then_falls_to_a_twentieth_over_the_decay_share():
    flat = get_config("tiny", {"train.lr": 1e-3}).train
    assert {train.learning_rate(flat, s, 100) for s in range(100)} == {1e-3}
    tcfg = get_config("tiny", {"train.lr": 1e-3, "train.lr_decay": 0.3}).train
    rates = [train.learning_rate(tcfg, s, 100) for s in range(101)]
    assert rates[:71] == [1e-3] * 71
    assert all(a >= b for a, b in itertools.pairwise(rates))
    assert rates[85] == pytest.approx(1e-3 * (0.05 + 0.95 * 0.5))
    assert rates[100] == pytest.approx(5e-5)


def test_closed_references_come_from_the_most_closed_training_frames(person):
    ds, feats = person
    cfg = TINY.override({"train.reference": "closed"})
    closed = train.reference_frames(ds, cfg)
    split = data.split_frames(ds.n_frames, cfg.train.heldout_fraction, cfg.train.val_fraction)
    assert set(closed) <= set(split.train) and 0 < len(closed) <= 0.11 * len(split.train) + 1
    opening = data.landmarks.mouth_opening(ds.points(), ds.scheme)
    assert np.nanmax(opening[closed]) <= np.nanpercentile(opening[split.train], 10)
    assert train.reference_frames(ds, TINY) is None  # "random": each split's own frames
    patches = data.model_patches(ds, cfg.model.image_size)
    samples = data.GeneratorSamples.for_indices(patches, feats, feats, split.train, cfg,
                                                augment=False, references=closed)
    pool = torch.from_numpy(np.stack([patches[i] for i in closed])).permute(0, 3, 1, 2) / 255
    for k in range(0, len(samples), 7):
        ref = samples[k]["inputs"][0, :3]
        assert (pool - ref).abs().flatten(1).max(1).values.min() < 1e-6
    with pytest.raises(train.TrainError, match="random"):
        train.reference_frames(ds, TINY.override({"train.reference": "still"}))


def test_weight_average_follows_the_weights_slowly_and_leaves_training_alone(person, tmp_path):
    ds, feats = person
    plain = train.train_generator(ds, TINY, tmp_path / "plain", feats, steps=10, progress=False)
    cfg = TINY.override({"train.ema": 0.9})
    averaged = train.train_generator(ds, cfg, tmp_path / "ema", feats, steps=10, progress=False)
    a = checkpoint.load_checkpoint(plain.checkpoint, kind="generator")
    b = checkpoint.load_checkpoint(averaged.checkpoint, kind="generator")
    # the average is only watched: the raw weights are those of the run without it
    for key, value in a["model"].items():
        torch.testing.assert_close(b["aux"]["raw_model"][key], value, rtol=1e-5, atol=1e-6)
    assert b["aux"]["average"]["updates"] == 10
    # what is saved as the model (and rendered) is the average, not the raw weights
    moved = [key for key, value in b["model"].items() if value.is_floating_point()
             and not torch.allclose(value, b["aux"]["raw_model"][key])]
    assert len(moved) > len(b["model"]) // 2
    model, _ = generators.load_generator(averaged.checkpoint)
    assert all(torch.equal(v, b["model"][k]) for k, v in model.state_dict().items())


def test_weight_average_keeps_less_of_itself_in_the_first_steps():
    net = torch.nn.Linear(2, 1)
    torch.nn.init.zeros_(net.weight)
    average = train.WeightAverage(net, 0.99)
    torch.nn.init.ones_(net.weight)
    average.update(net)  # keeps 2/11 of the zeros, not 0.99 of them
    assert average.model.weight.detach() == pytest.approx(np.full((1, 2), 9 / 11))
    for _ in range(2000):
        average.update(net)
    assert average.model.weight.detach() == pytest.approx(np.ones((1, 2)))
    net.weight.data.fill_(2.0)
    average.update(net)  # late on, the full decay: 0.99 of the average stays
    assert average.model.weight.detach() == pytest.approx(np.full((1, 2), 1.01))
    with pytest.raises(train.TrainError, match="between 0 and 1"):
        train.WeightAverage(net, 1.0)


def test_resume_with_a_weight_average_continues_exactly(person, tmp_path):
    ds, feats = person
    cfg = TINY.override({"train.ema": 0.9})
    straight = train.train_generator(ds, cfg, tmp_path / "a", feats, steps=10, progress=False)
    train.train_generator(ds, cfg, tmp_path / "b", feats, steps=5, progress=False)
    resumed = train.train_generator(ds, cfg, tmp_path / "b", feats, steps=10, progress=False)
    a = checkpoint.load_checkpoint(straight.checkpoint, kind="generator")
    b = checkpoint.load_checkpoint(resumed.checkpoint, kind="generator")
    for part in ("model", "raw"):
        wa = a["model"] if part == "model" else a["aux"]["raw_model"]
        wb = b["model"] if part == "model" else b["aux"]["raw_model"]
        for key in wa:
            torch.testing.assert_close(wa[key], wb[key], rtol=1e-5, atol=1e-6)


def test_augmented_samples_hear_every_feature_set_and_validation_only_the_original(person):
    ds, feats = person
    cfg = TINY.override({"train.window": 1})
    patches = data.model_patches(ds, cfg.model.image_size)
    sync_audio = syncnet.audio_windows(cfg.syncnet, ds.mel_windows())
    variants = np.stack([feats + 100.0, feats + 200.0])
    idx = np.arange(20)

    def heard(augment: bool) -> set[int]:
        samples = data.GeneratorSamples.for_indices(patches, feats, sync_audio, idx, cfg,
                                                    augment=augment, variants=variants)
        out = set()
        for _ in range(30):
            audio = samples[3]["audio"][0, 8].numpy()  # the centre row: frame 3's features
            out.add(round(float(np.mean(audio - feats[3])) / 100))
        return out

    assert heard(True) == {0, 1, 2}
    assert heard(False) == {0}


def test_loss_curves_show_a_run_that_logged_one_step():
    """A 2-minute budget on a busy CPU can log a single step: a line alone would draw nothing."""
    from synctalk_lib import figures

    fig = figures.loss_curves([{"step": 23, "loss": 0.50, "l1": 0.49, "val_l1": 0.24}])
    losses = fig.axes[0].lines
    assert [line.get_label() for line in losses] == ["loss", "l1"]
    assert all(line.get_marker() not in (None, "", "None") for line in losses)
