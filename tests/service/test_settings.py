"""Settings: defaults < config file < ``NEURFLOW_*`` environment < explicit values."""

from __future__ import annotations

import pytest

from neurflow.service.settings import load_settings


def test_settings_precedence(tmp_path):
    cfg = tmp_path / "neurflow.toml"
    cfg.write_text('port = 9001\nworkers = 3\napi_keys = ["a"]\n')
    s = load_settings(cfg, overrides={"workers": 2}, environ={"NEURFLOW_PORT": "9002", "NEURFLOW_AUTH": "false",
                                                              "NEURFLOW_API_KEYS": "x, y"})
    assert (s.port, s.workers, s.auth, s.api_keys) == (9002, 2, False, ["x", "y"])
    assert s.device_list() == ["cpu", "cpu"]
    with pytest.raises(ValueError, match="NEURFLOW_PORT"):
        load_settings(environ={"NEURFLOW_PORT": "eighty"})
    with pytest.raises(ValueError, match="invalid settings"):
        load_settings(overrides={"bogus": 1}, environ={})
