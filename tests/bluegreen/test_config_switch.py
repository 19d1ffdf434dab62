"""``[switch]``: the phased switch's steps and window, validated once with messages that
name the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_config import MINIMAL, error, load


def test_default_is_the_atomic_switch(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL)
    assert cfg.switch.steps == (100,)
    assert not cfg.switch.phased
    assert cfg.switch.phases == ()
    assert cfg.switch.step_window == 30.0


def test_phased_steps_parse(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL + "[switch]\nsteps = [10, 50, 100]\nstep_window = 2.5\n")
    assert cfg.switch.steps == (10, 50, 100)
    assert cfg.switch.phased
    assert cfg.switch.phases == (10, 50)
    assert cfg.switch.step_window == 2.5


def test_with_overrides_keeps_and_revalidates_the_switch(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL).with_overrides({"switch": {"steps": [25, 100]}})
    assert cfg.switch.steps == (25, 100)


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("steps = []", "switch.steps: a list of whole percents"),
        ('steps = "10,100"', "switch.steps: a list of whole percents"),
        ("steps = [0, 100]", "0 is not a whole percent 1..100"),
        ("steps = [10, 150]", "150 is not a whole percent 1..100"),
        ("steps = [10.5, 100]", "10.5 is not a whole percent 1..100"),
        ("steps = [true, 100]", "True is not a whole percent 1..100"),
        ("steps = [50, 10, 100]", "[50, 10, 100] is not strictly increasing"),
        ("steps = [50, 50, 100]", "[50, 50, 100] is not strictly increasing"),
        ("steps = [10, 50]", "[10, 50] must end at 100"),
        ("step_window = 0", "switch.step_window: must be a positive number of seconds, got 0"),
        ('step_window = "30"', "switch.step_window: must be a positive number of seconds"),
        ("window = 3", "switch.window: unknown key; expected one of: step_window, steps"),
    ],
)
def test_bad_switch_values_name_the_key(tmp_path: Path, snippet: str, expected: str) -> None:
    assert expected in error(tmp_path, MINIMAL + "[switch]\n" + snippet + "\n")
