"""The step-phase diagnosis: a short real run prints every figure, and the warm replay of
``controls`` hands the step its first plan."""

from greyelephant.benchmarks import step_phases


def test_a_short_run_prints_each_phase_and_the_torch_calls(capsys):
    assert step_phases.main(["--batch", "2", "--steps", "6", "--warmup", "2"]) == 0
    assert step_phases.main(["--batch", "2", "--steps", "6", "--warmup", "2",
                             "--compiled", "off"]) == 0
    assert step_phases.main(["--batch", "2", "--steps", "6", "--warmup", "2",
                             "--lanes", "on"]) == 0
    assert step_phases.main(["--batch", "2", "--steps", "6", "--warmup", "2",
                             "--host-path", "gpu"]) == 0
    out = capsys.readouterr().out
    for label in ("step", "controls", "_check", "rest", "controls cold", "warm",
                  "logits.shape", "logits.detach().numpy()", "logits.numpy()",
                  "compiled loops on", "compiled loops off", "lanes off", "lanes on (",
                  "row steps on the fast path", "host path device", "host path gpu"):
        assert label in out


def test_the_gpu_host_path_leaves_the_module_as_it_was():
    from greyelephant.control import steering_batch as sb

    before = (sb._numpy_view, sb._argmax_rows)
    assert step_phases.main(["--batch", "2", "--steps", "4", "--warmup", "2",
                             "--host-path", "gpu"]) == 0
    assert (sb._numpy_view, sb._argmax_rows) == before


def test_controls_twice_returns_the_first_plan_and_times_both_calls():
    loop = step_phases.make_loop(2)
    loop.step(count=False)
    plans = []
    method = loop.batch.controls

    def recording(idx, vocab, *fed):
        plans.append(method(idx, vocab, *fed))
        return plans[-1]

    loop.batch.controls = recording
    cold, warm = [], []
    step_phases.controls_twice(loop.batch, cold, warm)
    loop.step(count=False)
    assert len(plans) == 2 and len(cold) == len(warm) == 1
    assert cold[0] > 0 and warm[0] > 0
    assert plans[0].k == plans[1].k == 2
    got = loop.batch.controls([0, 1], loop.buffer.shape[1])  # called directly: the first
    assert got is plans[2] and len(plans) == 4 and len(cold) == 2


def test_profile_prints_the_top_functions(capsys):
    assert step_phases.main(["--batch", "2", "--steps", "4", "--warmup", "2",
                             "--profile", "3"]) == 0
    out = capsys.readouterr().out
    assert "cProfile, 3 steps" in out and "steering_batch.py" in out


def test_parts_time_a_many_spec_run_and_leave_the_functions_as_they_were(capsys):
    from greyelephant.control import ban_automaton, step_states

    before = (ban_automaton.PreferSide.__dict__["_tokens"], step_states._compute_many)
    assert step_phases.main(["--batch", "4", "--steps", "6", "--warmup", "2",
                             "--distinct", "3", "--own-prefer", "--parts", "default"]) == 0
    out = capsys.readouterr().out
    assert "each request its own spec of 3 entities and its own prefer list" in out
    parts = out[out.index("parts, 6 more steps"):]
    for name in step_phases.DEFAULT_PARTS:
        assert name in parts
    assert "calls a step" in parts and "ms a step" in parts
    assert (ban_automaton.PreferSide.__dict__["_tokens"], step_states._compute_many) == before


def test_own_prefer_needs_distinct():
    import pytest

    with pytest.raises(SystemExit):
        step_phases.main(["--batch", "2", "--own-prefer"])
