"""The rank-0 train progress display: short plain lines in logs, a redrawn bar on a terminal."""
from __future__ import annotations

import io

from training.progress import EpochProgress, progress_bar


def _run_epoch(progress: EpochProgress, steps: int) -> None:
    progress.start_epoch(2)
    for done in range(1, steps + 1):
        progress.step(done, 0.5 + 1.0 / done)
    progress.end_epoch(steps, 0.61234, 0.75432, 3.21)


def test_plain_text_prints_one_line_per_tenth_of_an_epoch():
    out = io.StringIO()
    _run_epoch(EpochProgress(total_steps=200, epochs=6, stream=out, is_tty=False), 200)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert len(lines) == 11, lines  # 10 progress lines + the epoch line
    assert lines[0].startswith("epoch 2/6 [##") and "20/200 steps  10% loss 0.5500" in lines[0]
    assert "200/200 steps 100%" in lines[9]
    assert lines[-1] == "epoch 2/6 done: 200 steps in 3.2s, loss 0.6123, val AUC 0.7543"


def test_more_steps_than_estimated_keep_a_full_bar():
    out = io.StringIO()
    _run_epoch(EpochProgress(total_steps=3, epochs=1, stream=out, is_tty=False), 5)
    assert "5/3 steps 100%" in out.getvalue()
    assert progress_bar(5, 3, width=4) == "[####]" and progress_bar(1, 4, width=4) == "[#...]"


def test_terminal_redraws_one_line_and_other_ranks_stay_silent():
    out = io.StringIO()
    _run_epoch(EpochProgress(total_steps=50, epochs=3, stream=out, is_tty=True, min_interval_s=0.0), 50)
    text = out.getvalue()
    assert text.count("\n") == 1 and text.count("\r") == 51
    assert text.rstrip("\n").endswith("val AUC 0.7543\x1b[K")
    silent = io.StringIO()
    _run_epoch(EpochProgress(total_steps=50, epochs=3, stream=silent, enabled=False), 50)
    assert silent.getvalue() == ""
