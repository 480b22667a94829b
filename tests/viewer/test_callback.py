"""The viewer's trainer callback on a real Trainer (toy method): status, curves, ETA, pause/resume,
render windows that never overlap a training step."""

from __future__ import annotations

import math
import threading
import time

import pytest

from langfield.training import Trainer, TrainerConfig
from langfield.viewer.callback import TrainingStatus, ViewerCallback, estimate_eta

from ..training.toy_method import build

pytestmark = pytest.mark.usefixtures("single_thread")


def trainer_with(callback, max_steps=6, **kw):
    method, dataset = build()
    cfg = TrainerConfig(max_steps=max_steps, num_rays=32, log_every=2, eval_every=0, checkpoint_every=0, output_dir=None,
                        seed=0, device="cpu", progress=False, **kw)  # fmt: skip
    return Trainer(method, cfg, dataset=dataset, callbacks=[callback])


def test_status_curves_and_eta_follow_the_log_records():
    cb = ViewerCallback()
    seen = []
    cb.listeners.append(lambda st: seen.append((st.state, st.step)))
    trainer = trainer_with(cb, max_steps=6)
    trainer.train()
    st = cb.status
    assert st.state == "done" and st.step == 6 and st.max_steps == 6 and st.eta_s == 0.0
    assert st.steps == [2, 4, 6] and len(st.losses) == 3 and all(math.isfinite(v) for v in st.losses)
    assert all(math.isfinite(v) for v in st.psnrs) and st.psnr == st.psnrs[-1]  # SceneMethod.metrics: PSNR
    assert st.rays_per_s > 0 and st.loss == st.losses[-1]
    assert seen[0] == ("training", 0) and ("training", 4) in seen and seen[-1] == ("done", 6)
    text = st.markdown()
    assert "step 6 / 6" in text and f"{st.psnr:.2f}" in text


def test_estimate_eta():
    assert estimate_eta(100, 1000, 20.0, 0, 0.0) == 180.0
    assert estimate_eta(150, 1000, 30.0, 100, 20.0) == pytest.approx(850 * 10.0 / 50)  # rate since the resume
    assert estimate_eta(100, 1000, 20.0, 0, 0.0, max_seconds=30.0) == 10.0
    assert estimate_eta(0, 1000, 0.0, 0, 0.0) is None
    assert TrainingStatus().markdown().count("-") >= 4  # no values yet: dashes, not errors


def test_pause_blocks_training_and_lets_renders_through_then_resume_finishes():
    cb = ViewerCallback()
    trainer = trainer_with(cb, max_steps=4)
    cb.pause()  # paused before training: the trainer parks at its first sync point
    thread = threading.Thread(target=trainer.train, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while trainer.step < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        assert trainer.step == 1 and cb.status.state == "paused" and thread.is_alive()
        with cb.render_access(timeout=2.0):  # the method is free while paused
            assert trainer.step == 1
    finally:
        cb.resume()
        thread.join(20)
    assert not thread.is_alive() and trainer.step == 4 and cb.status.state == "done"
    with cb.render_access(timeout=0.1):  # after training renders run freely
        pass


def test_render_windows_open_at_sync_points_and_no_step_runs_inside_one():
    cb = ViewerCallback(max_window_seconds=0.05, min_train_seconds=0.0)
    trainer = trainer_with(cb, max_steps=20)
    inside = []
    stop = threading.Event()

    def renderer():
        while not stop.is_set():
            try:
                with cb.render_access(timeout=5.0):
                    before = trainer.step
                    time.sleep(0.01)  # "render" a band
                    inside.append(trainer.step == before)
            except TimeoutError:
                return

    thread = threading.Thread(target=renderer, daemon=True)
    thread.start()
    try:
        trainer.train()
    finally:
        stop.set()
        thread.join(10)
    assert trainer.step == 20 and len(inside) >= 3 and all(inside)


def test_request_stop_from_the_viewer_stops_training_cleanly():
    cb = ViewerCallback()
    trainer = trainer_with(cb, max_steps=50)
    cb.listeners.append(lambda st: cb.request_stop() if st.step >= 2 else None)
    trainer.train()
    assert 2 <= trainer.step < 50
