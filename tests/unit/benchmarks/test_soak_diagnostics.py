"""The soak's failure diagnostics: an exception's cause chain, and the request the same
worker made before a failed one."""

from greyelephant.benchmarks.soak import Outcome, exception_chain, previous_of_worker


def test_exception_chain_names_each_cause():
    try:
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except OSError as exc:
            raise RuntimeError() from exc
    except RuntimeError as exc:
        chain = exception_chain(exc)
    assert chain.startswith("RuntimeError: ")
    assert "<- ConnectionResetError: [Errno 104] Connection reset by peer" in chain


def test_previous_of_worker_is_the_same_workers_last_earlier_request():
    a = Outcome("chat", "greedy", "soak-chat-1", 1.0, end=5.0, worker=6)
    b = Outcome("chat", "greedy", "soak-chat-2", 2.0, end=3.0, worker=1)
    c = Outcome("cancel", "timed-json-chat", "soak-cancel-3", 5.0, end=6.0,
                outcome="cancelled", worker=6)
    d = Outcome("completions", "single", "soak-completions-4", 6.0, end=60.0,
                outcome="connection_error", worker=6)
    prev = previous_of_worker([a, b, c, d], d)
    assert prev["request_id"] == "soak-cancel-3" and prev["outcome"] == "cancelled"
    assert previous_of_worker([a, b, c, d], a) is None
