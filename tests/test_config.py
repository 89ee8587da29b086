import pytest

from synctalk_lib.config import PRESETS, Config, get_config


def test_every_preset_round_trips_through_dict():
    for cfg in PRESETS.values():
        assert Config.from_dict(cfg.to_dict()) == cfg


def test_saved_settings_from_another_version_load_with_a_warning(caplog):
    """A dataset or checkpoint saved with a setting this version lacks still loads."""
    saved = get_config("cpu", {"crop.smooth_frames": 9}).to_dict()
    saved["infer"]["retired_setting"] = 1.5
    with caplog.at_level("WARNING", logger="synctalk_lib.config"):
        cfg = Config.from_dict(saved)
    assert cfg == get_config("cpu", {"crop.smooth_frames": 9})
    assert "infer.retired_setting" in caplog.text


def test_override_checks_types_and_keys():
    cfg = get_config("cpu", {"crop.smooth_frames": "9", "audio.fmin": 50})
    assert cfg.crop.smooth_frames == 9 and cfg.audio.fmin == 50.0
    with pytest.raises(KeyError, match="valid keys"):
        cfg.override({"crop.smoothness": 3})
    with pytest.raises(TypeError, match="expects int"):
        cfg.override({"crop.size": "big"})
    with pytest.raises(TypeError):
        cfg.override({"crop.size": True})


def test_unknown_preset_lists_known_ones():
    with pytest.raises(KeyError, match="hd328"):
        get_config("huge")


def test_inner_patch_is_320_for_328_crops():
    assert get_config("hd328").crop.inner == 320
