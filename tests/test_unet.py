import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from synctalk_lib.config import PRESETS, get_config
from synctalk_lib.unet import (
    AUDIO_MODES,
    AUDIO_WINDOW,
    Generator,
    audio_feature_shape,
    audio_window_to_input,
    count_parameters,
    load_synctalk2d_checkpoint,
    reference_name,
    to_synctalk2d_state_dict,
)

MODES = sorted(AUDIO_MODES)
HD328_PARAMETERS = {"ave": 12_186_935, "hubert": 12_186_935, "wenet": 12_986_871}
SYNCTALK2D_MODES = sorted(HD328_PARAMETERS)  # whisper is ours, not SyncTalk_2D's


def inputs(model: Generator, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    side = model.image_size
    x = torch.rand(batch, 6, side, side, generator=g)
    audio = torch.randn(batch, *audio_feature_shape(model.audio_mode), generator=g)
    return x, audio


def model_for(preset: str, mode: str) -> Generator:
    return Generator.from_config(get_config(preset, {"model.audio_mode": mode}))


def randomise_batch_norms(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine values, so eval mode tests every BN key."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=g))


# --- an independent, functional forward over SyncTalk_2D's state-dict names (BGR) ----------


def ref_conv_bn(sd, conv, bn, x, stride=1, padding=0, groups=1, relu=True):
    x = F.conv2d(x, sd[f"{conv}.weight"], sd.get(f"{conv}.bias"), stride, padding, 1, groups)
    x = F.batch_norm(x, sd[f"{bn}.running_mean"], sd[f"{bn}.running_var"],
                     sd[f"{bn}.weight"], sd[f"{bn}.bias"], False, 0.0, 1e-5)
    return F.relu(x) if relu else x


def ref_inverted_residual(sd, p, x, stride=1, residual=False):
    hidden = sd[f"{p}.conv.0.weight"].shape[0]
    y = ref_conv_bn(sd, f"{p}.conv.0", f"{p}.conv.1", x)
    y = ref_conv_bn(sd, f"{p}.conv.3", f"{p}.conv.4", y, stride, 1, hidden)
    y = ref_conv_bn(sd, f"{p}.conv.6", f"{p}.conv.7", y, relu=False)
    return x + y if residual else y


def ref_double(sd, p, x, stride=1):
    x = ref_inverted_residual(sd, f"{p}.double_conv.0", x, stride)
    return ref_inverted_residual(sd, f"{p}.double_conv.1", x, residual=True)


def ref_forward(sd, x, audio, mode):
    """SyncTalk_2D's Model(6, mode) forward, written from its layer list (BGR in and out)."""
    skips = [ref_inverted_residual(sd, "inc.inconv.0", x)]
    for i in range(1, 6):
        skips.append(ref_double(sd, f"down{i}.maxpool_conv.0", skips[-1], stride=2))
    wenet = mode == "wenet"
    a = ref_inverted_residual(sd, "audio_model.conv1", audio, residual=wenet)
    a = ref_inverted_residual(sd, "audio_model.conv2", a, residual=wenet)
    stride = {"ave": 1, "hubert": 2, "wenet": (1, 2)}[mode]
    a = ref_conv_bn(sd, "audio_model.conv3", "audio_model.bn3", a, stride, 1)
    a = ref_inverted_residual(sd, "audio_model.conv4", a, residual=True)
    a = ref_conv_bn(sd, "audio_model.conv5", "audio_model.bn5", a, 2, 3)
    a = ref_inverted_residual(sd, "audio_model.conv6", a, residual=True)
    a = ref_inverted_residual(sd, "audio_model.conv7", a, residual=True)
    y = torch.cat([skips[5], a], 1)
    y = ref_double(sd, "fuse_conv.1", ref_double(sd, "fuse_conv.0", y))
    for i, skip in enumerate(reversed(skips[:5]), start=1):
        y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=True)
        y = ref_double(sd, f"up{i}.conv", torch.cat([y, skip], 1))
    return torch.sigmoid(F.conv2d(y, sd["outc.conv.weight"], sd["outc.conv.bias"]))


# --- parity --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", SYNCTALK2D_MODES)
def test_hd328_parameter_count_equals_synctalk2d(mode):
    assert count_parameters(model_for("hd328", mode)) == HD328_PARAMETERS[mode]


@pytest.mark.parametrize("dim", [768, 1024, 1536])
def test_whisper_input_width_follows_the_feature_size(dim):
    model = Generator("whisper", (8, 16, 32, 64, 128), 64, audio_dim=dim)
    assert model.audio_shape == audio_feature_shape("whisper", dim) == (dim // 16, 16, 16)
    window = torch.randn(2, AUDIO_WINDOW, dim)
    out = model(torch.rand(2, 6, 64, 64), audio_window_to_input(window, "whisper"))
    assert out.shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="expects audio of shape"):
        model(torch.rand(2, 6, 64, 64), torch.randn(2, 48, 16, 16) if dim != 768 else
              torch.randn(2, 64, 16, 16))


def forward_gflop(preset: str) -> float:
    """Multiply and add counted apart (FlopCounterMode), on the meta device: no computation."""
    with torch.device("meta"):
        model = model_for(preset, "ave")
        x, audio = torch.empty(1, 6, model.image_size, model.image_size), torch.empty(1, 32, 16, 16)
    with FlopCounterMode(display=False) as counter:
        model(x, audio)
    return counter.get_total_flops() / 1e9


def test_hd328_costs_9_77_gflop_and_the_cpu_preset_30x_less():
    hd328 = forward_gflop("hd328")
    assert hd328 == pytest.approx(9.77, abs=0.005)
    assert hd328 / forward_gflop("cpu") >= 30


@pytest.mark.parametrize("mode", SYNCTALK2D_MODES)
def test_converted_synctalk2d_weights_compute_the_same_picture_in_rgb(mode):
    model = model_for("hd328", mode).eval()
    randomise_batch_norms(model, seed=1)
    reference = to_synctalk2d_state_dict(model)  # stands in for a SyncTalk_2D checkpoint
    ours = model_for("hd328", mode).eval()
    load_synctalk2d_checkpoint(ours, reference)
    x, audio = inputs(ours, batch=1)
    bgr = x[:, [2, 1, 0, 5, 4, 3]]
    with torch.no_grad():
        expected = ref_forward(reference, bgr, audio, mode)[:, [2, 1, 0]]
        got = ours(x, audio)
    assert got.shape == (1, 3, 320, 320)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_every_synctalk2d_key_maps_to_exactly_one_of_ours():
    model = model_for("hd328", "ave")
    names = [reference_name(k) for k in model.state_dict()]
    assert len(set(names)) == len(names) == len(model.state_dict())
    assert "inc.inconv.0.conv.0.weight" in names and "outc.conv.bias" in names
    assert "up5.conv.double_conv.1.conv.7.running_var" in names
    assert "audio_model.bn5.num_batches_tracked" in names
    assert not any(k.startswith(("stem", "downs", "ups", "head", "audio.")) for k in names)


def test_export_and_load_round_trip_and_flip_colour_channels():
    model = model_for("hd328", "ave")
    exported = to_synctalk2d_state_dict(model)
    first = model.state_dict()["stem.expand.conv.weight"]
    torch.testing.assert_close(exported["inc.inconv.0.conv.0.weight"],
                               first[:, [2, 1, 0, 5, 4, 3]])
    torch.testing.assert_close(exported["outc.conv.bias"], model.head.bias.detach()[[2, 1, 0]])
    again = load_synctalk2d_checkpoint(model_for("hd328", "ave"), exported)
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def test_checkpoint_from_a_file_with_dataparallel_prefix_loads(tmp_path):
    model = model_for("hd328", "hubert")
    path = tmp_path / "100.pth"
    torch.save({f"module.{k}": v for k, v in to_synctalk2d_state_dict(model).items()}, path)
    loaded = load_synctalk2d_checkpoint(model_for("hd328", "hubert"), path)
    assert torch.equal(loaded.head.weight, model.head.weight)


def test_wrong_mode_checkpoint_names_the_mode_it_needs():
    wenet_checkpoint = to_synctalk2d_state_dict(model_for("hd328", "wenet"))
    with pytest.raises(ValueError, match=r"audio_model\.conv1.*'wenet'.*audio_mode 'ave'"):
        load_synctalk2d_checkpoint(model_for("hd328", "ave"), wenet_checkpoint)


def test_smaller_model_for_a_reference_checkpoint_names_channels_and_preset():
    checkpoint = to_synctalk2d_state_dict(model_for("hd328", "ave"))
    with pytest.raises(ValueError, match=r"checkpoint key .* has shape .* model.channels=32,64,128,256,512"):
        load_synctalk2d_checkpoint(model_for("tiny", "ave"), checkpoint)


def test_missing_keys_are_named():
    checkpoint = to_synctalk2d_state_dict(model_for("hd328", "ave"))
    del checkpoint["up5.conv.double_conv.1.conv.7.weight"]
    with pytest.raises(KeyError, match=r"missing \['up5\.conv\.double_conv\.1\.conv\.7\.weight"):
        load_synctalk2d_checkpoint(model_for("hd328", "ave"), checkpoint)
    with pytest.raises(KeyError, match="not a SyncTalk_2D"):
        load_synctalk2d_checkpoint(model_for("hd328", "ave"), {"conv.weight": torch.zeros(1)})


# --- shapes and configurations ---------------------------------------------------------------


@pytest.mark.parametrize("preset", ["tiny", "cpu"])
@pytest.mark.parametrize("mode", MODES)
def test_forward_shape_and_range_for_every_preset_and_mode(preset, mode):
    model = model_for(preset, mode)
    x, audio = inputs(model)
    with torch.no_grad():
        y = model(x, audio)
    side = PRESETS[preset].model.image_size
    assert y.shape == (2, 3, side, side) and y.dtype == torch.float32
    assert 0.0 <= y.min() and y.max() <= 1.0


def test_hd328_forward_makes_a_320_px_picture():
    model = model_for("hd328", "ave").eval()
    with torch.no_grad():
        y = model(*inputs(model, batch=1))
    assert y.shape == (1, 3, 320, 320)


@pytest.mark.parametrize("channels", [(16, 32, 64, 128, 256), (8, 16, 32, 64, 128)])
@pytest.mark.parametrize("side", [64, 160, 352])
def test_any_width_and_side_divisible_by_32_works(channels, side):
    model = Generator("ave", channels, side).eval()
    with torch.no_grad():
        assert model(*inputs(model, batch=1)).shape == (1, 3, side, side)


def test_bad_configuration_and_inputs_raise_actionable_errors():
    with pytest.raises(ValueError, match="divisible by 32"):
        Generator("ave", image_size=300)
    with pytest.raises(ValueError, match="unknown audio_mode 'mel'"):
        Generator("mel")
    with pytest.raises(ValueError, match="5 widths"):
        Generator("ave", (16, 32, 64))
    model = model_for("tiny", "ave")
    x, _ = inputs(model)
    with pytest.raises(ValueError, match=r"'ave' expects audio of shape \(B, 32, 16, 16\)"):
        model(x, torch.zeros(2, 32, 32, 32))


@pytest.mark.parametrize("mode", MODES)
def test_audio_window_reshapes_row_major_into_the_mode_shape(mode):
    shape = audio_feature_shape(mode)
    per_frame = shape[0] * shape[1] * shape[2] // AUDIO_WINDOW
    window = torch.arange(3 * AUDIO_WINDOW * per_frame, dtype=torch.float32)
    window = window.reshape(3, AUDIO_WINDOW, per_frame)
    audio = audio_window_to_input(window, mode)
    assert audio.shape == (3, *shape)
    assert torch.equal(audio.flatten(1), window.flatten(1))
    if mode == "hubert":  # (16, 2, 1024) windows are accepted as they come
        assert audio_window_to_input(window.reshape(3, 16, 2, 1024), mode).shape == (3, *shape)
    # whisper takes any multiple of 16 (its model's size); the generator checks it matches
    wrong = ("divisible by 16" if mode == "whisper"
             else f"{mode!r} expects {per_frame} features per frame")
    with pytest.raises(ValueError, match=wrong):
        audio_window_to_input(window[..., :-1], mode)


# --- performance paths ------------------------------------------------------------------------


def test_channels_last_forward_equals_contiguous():
    model = model_for("tiny", "ave").eval()
    x, audio = inputs(model)
    with torch.no_grad():
        expected = model(x, audio)
        model = model.to(memory_format=torch.channels_last)
        got = model(x.to(memory_format=torch.channels_last), audio)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_channels_last_training_step_equals_contiguous_one():
    """The CPU layout shortcuts (standard-layout stem, batch norm of widths not divisible by
    8 outside channels_last) change no value: loss, gradients and running statistics agree.
    In float64, so that rounding differences between the layouts stay far below the check."""
    torch.manual_seed(0)
    plain = model_for("tiny", "ave").double().train()  # widths 8..128: stem 12, decoder 4
    fast = model_for("tiny", "ave").double()
    fast.load_state_dict(plain.state_dict())
    fast = fast.train().to(memory_format=torch.channels_last)
    assert fast.stem.expand.conv.weight.stride() == (6, 1, 1, 1)  # standard strides kept
    x, audio = (t.double() for t in inputs(plain))
    target = torch.rand(x.shape[0], 3, *x.shape[2:], dtype=torch.float64)
    losses = [F.mse_loss(model(xin, audio), target)
              for model, xin in ((plain, x), (fast, x.to(memory_format=torch.channels_last)))]
    for loss in losses:
        loss.backward()
    torch.testing.assert_close(losses[1], losses[0])
    for (name, a), b in zip(plain.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, msg=name)
    for (name, a), b in zip(plain.named_buffers(), fast.buffers(), strict=True):
        torch.testing.assert_close(b, a, msg=name)


def test_bf16_autocast_with_channels_last_runs_close_to_fp32():
    model = model_for("cpu", "ave").eval()
    x, audio = inputs(model)
    with torch.no_grad():
        expected = model(x, audio)
        model = model.to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(x.to(memory_format=torch.channels_last), audio)
    assert got.shape == expected.shape
    assert (got.float() - expected).abs().max() < 0.05


def test_a_few_adam_steps_reduce_l1_on_a_fixed_batch():
    torch.manual_seed(0)
    model = model_for("tiny", "ave").train()
    x, audio = inputs(model, batch=4)
    target = x[:, :3]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = F.l1_loss(model(x, audio), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]


def test_a_fresh_generator_can_start_at_the_data_colour():
    import numpy as np

    from synctalk_lib import data

    cfg = get_config("tiny")
    model = Generator.from_config(cfg.model).eval()
    x = torch.rand(2, 6, 64, 64)
    audio = torch.rand(2, *audio_feature_shape("ave"))
    torch.nn.init.zeros_(model.head.weight)  # isolate the bias: output = sigmoid(bias)
    model.start_at_colour([0.8, 0.5, 0.3])
    out = model(x, audio)
    assert torch.allclose(out.mean(dim=(0, 2, 3)), torch.tensor([0.8, 0.5, 0.3]), atol=1e-5)
    patches = np.zeros((4, 64, 64, 3), np.uint8)
    patches[..., 0] = 200  # red inside and outside the masked area
    colour = data.mean_colour(patches, np.arange(4), cfg)
    np.testing.assert_allclose(colour, [200 / 255, 0, 0], atol=1e-6)


def test_audio_gain_scales_the_audio_code_away_from_its_pivot_and_leaves_checkpoints():
    """set_audio_gain(g, pivot): what the fusion sees is pivot + g (code - pivot); the pivot
    is not part of the state dict, and gain 1 gives the plain network back."""
    torch.manual_seed(0)
    m = get_config("tiny").model  # at 320 px, where the audio code is the bottleneck's size
    model = Generator(m.audio_mode, m.channels, 320, m.audio_dim).eval()
    size = model.image_size
    x, audio = torch.rand(2, 6, size, size), torch.randn(2, *model.audio_shape)
    seen = []
    c4 = model.channels[4]
    model.fuse.register_forward_pre_hook(lambda m, args: seen.append(args[0][:, -c4:]))
    with torch.no_grad():
        plain = model(x, audio)
        code = model.audio_latent(audio)
        pivot = model.audio_latent(audio[:1])
        keys = set(model.state_dict())
        model.set_audio_gain(2.5, pivot)
        model(x, audio)
        torch.testing.assert_close(seen[-1], pivot + 2.5 * (code - pivot))
        torch.testing.assert_close(seen[-1][0], code[0])  # the pivot's own audio: unchanged
        assert set(model.state_dict()) == keys
        model.set_audio_gain(1.0)
        torch.testing.assert_close(model(x, audio), plain)
    with pytest.raises(ValueError, match="pivot"):
        model.set_audio_gain(2.0)
    with pytest.raises(ValueError, match="mouth_gain"):
        model.set_audio_gain(-1.0, pivot)


@pytest.mark.parametrize("mode,dim", [("whisper", 384), ("whisper", 768), ("ave", 0)])
def test_audio_context_hears_only_the_frames_near_the_centre(mode, dim):
    """model.audio_context k: feature frames further than k from the window's centre do not
    change the audio code the bottleneck sees; nearer ones do; the default hears all 16 and
    no state-dict key is added."""
    torch.manual_seed(0)
    m = get_config("tiny").model
    full = Generator(mode, m.channels, m.image_size, dim).eval()
    near = Generator(mode, m.channels, m.image_size, dim, audio_context=2).eval()
    near.load_state_dict(full.state_dict())
    assert set(near.state_dict()) == set(full.state_dict())
    per_frame = dim or 512
    window = torch.randn(1, AUDIO_WINDOW, per_frame)

    def run(model, w):
        return model.audio_latent(audio_window_to_input(w, mode))

    far, close = window.clone(), window.clone()
    far[:, [0, 5, 11, 15]] += 3.0  # centre 8: these lie 8, 3, 3 and 7 frames away
    close[:, 6] += 3.0  # 2 frames away
    torch.testing.assert_close(run(near, far), run(near, window))
    assert (run(near, close) - run(near, window)).abs().max() > 1e-4
    assert (run(full, far) - run(full, window)).abs().max() > 1e-4
    seen = []  # the forward pass hears what audio_latent does
    c4 = near.channels[4]
    near.fuse.register_forward_pre_hook(lambda mod, args: seen.append(args[0][:, -c4:]))
    with torch.no_grad():
        near(torch.rand(1, 6, 320, 320), audio_window_to_input(far, mode))
    torch.testing.assert_close(seen[-1], run(near, window))  # 320 px: no resize
    with pytest.raises(ValueError, match="audio_context"):
        Generator(mode, m.channels, m.image_size, dim, audio_context=9)


def test_frame_projection_reads_each_frame_whole_and_keeps_the_context(tmp_path):
    """model.audio_project D: one linear map per feature frame, shared by the 16 frames, laid
    out as D channels over time; frames outside the context still change nothing, the
    branch's parameters grow by F x D only, and ONNX computes the same code as torch."""
    from synctalk_lib import backends
    from synctalk_lib.config import Config

    torch.manual_seed(0)
    m = get_config("tiny").model
    dim = 384
    plain = Generator("whisper", m.channels, m.image_size, dim, audio_context=2)
    model = Generator("whisper", m.channels, m.image_size, dim, audio_context=2,
                      audio_project=16).eval()
    assert "project.linear.weight" in model.state_dict()
    assert model.project.linear.weight.shape == (16, dim)
    assert model.project.linear.bias is None  # masked frames stay zero
    assert count_parameters(model) < count_parameters(plain) + dim * 16
    window = torch.randn(2, AUDIO_WINDOW, dim)
    audio = audio_window_to_input(window, "whisper")
    laid = model.project(audio)
    assert laid.shape == (2, 16, AUDIO_WINDOW, AUDIO_WINDOW)
    # row t holds frame t mapped by the shared weight, the same in every column
    expected = window @ model.project.linear.weight.T  # (B, 16, D)
    torch.testing.assert_close(laid[..., 3], expected.transpose(1, 2))
    torch.testing.assert_close(laid[..., 0], laid[..., 15])
    far, close = window.clone(), window.clone()
    far[:, [0, 4, 12, 15]] += 3.0
    close[:, 9] += 3.0

    def run(w):
        return model.audio_latent(audio_window_to_input(w, "whisper"))

    torch.testing.assert_close(run(far), run(window))
    assert (run(close) - run(window)).abs().max() > 1e-4
    # built from a config, and the ONNX export agrees with torch
    cfg = Config().override({"model.channels": m.channels, "model.image_size": m.image_size,
                             "model.audio_mode": "whisper", "model.audio_dim": dim,
                             "model.audio_context": 2, "model.audio_project": 16})
    built = Generator.from_config(cfg).eval()
    assert built.project is not None and set(built.state_dict()) == set(model.state_dict())
    built.load_state_dict(model.state_dict())
    source = tmp_path / "generator.pt"
    torch.save(built.state_dict(), source)
    onnx = backends.cached_onnx(built, backends.generator_inputs(cfg), source, "projected")
    x = torch.rand(2, 6, m.image_size, m.image_size)
    with torch.no_grad():
        want = built(x, audio).numpy()
    got = onnx(x.numpy(), audio.numpy())
    assert abs(got - want).max() < 1e-4
    with pytest.raises(ValueError, match="audio_project"):
        Generator("whisper", m.channels, m.image_size, dim, audio_project=-1)
