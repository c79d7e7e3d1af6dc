"""Settings that did nothing are gone; an old settings file still loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from stt_operator.settings import OperatorSettings


def test_old_keys_are_renamed_or_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "config.yaml"
    path.write_text('revision_history_limit: 5\ndefault_abtest_duration: "36h"\nanalytics_retention: "3d"\n')
    settings = OperatorSettings.load(str(path))
    assert settings.analytics_window == "3d"
    assert not hasattr(settings, "revision_history_limit") and not hasattr(
        settings, "default_abtest_duration"
    )
    assert "revision_history_limit is ignored" in caplog.text and "analytics_retention is now" in caplog.text


def test_unknown_keys_still_fail(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("analytics_retnetion: 3d\n")
    with pytest.raises(ValueError, match="analytics_retnetion"):
        OperatorSettings.load(str(path))
