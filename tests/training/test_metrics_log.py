"""A resumed run's metrics log holds each step once: what the earlier run logged past the resume is cut."""
import json


def _stats(step):
    from megatron_spirit.training.metrics import StepStats

    return StepStats(step, loss=10.0 - step, lr=1e-3, grad_norm=1.0, tokens=8, seconds=0.1, skipped=0, memory_gb=0.1)


def test_resume_cuts_the_jsonl_and_tensorboard_back_to_the_resumed_step(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from megatron_spirit.training.metrics import MetricsLog

    log = MetricsLog(tmp_path, tensorboard=True)
    for step in range(1, 6):
        log.write(_stats(step))
    log.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "lo')  # torn by a kill
    log = MetricsLog(tmp_path, tensorboard=True, resume_step=3)  # the checkpoint of step 3 was resumed
    for step in range(4, 7):
        log.write(_stats(step))
    log.close()
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
