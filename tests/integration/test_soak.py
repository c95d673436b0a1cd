"""The soak's short preset (benchmarks/soak.py) against the session's server: 2 minutes of
mixed traffic at concurrency 8 (plain, steered, streaming, critique-revise, completions,
requests cancelled mid-stream, a few invalid ones). Asserted: no 5xx, no connection failure,
every stream complete, and every cancelled request freed (vLLM's running / waiting gauges
and the server's in-flight gauge back to 0 within seconds of the traffic stopping).
Memory flatness is only reported in the short form (the full preset asserts it)."""

import pytest

from greyelephant.benchmarks.soak import SoakConfig, run_soak

pytestmark = pytest.mark.engine


def test_short_soak(server, tmp_path):
    result = run_soak(SoakConfig(preset="short", base_url=server["base"],
                                 server_log=server["log"], out_dir=tmp_path / "soak-short",
                                 command="tests/integration/test_soak.py"))
    crit = result["criteria"]
    # The first failed requests (with their bodies) and the server log lines naming them.
    failed = (result["failed_requests"][:5], result.get("failed_request_log_lines"))
    assert result["requests"] > 0 and result["outcomes"].get("cancelled", 0) > 0, \
        result["outcomes"]
    assert crit["no_server_errors"]["pass"], f"{crit['no_server_errors']}, e.g. {failed}"
    # with the client's own loop lag: a stalled client can lose a kept-alive connection
    assert crit["no_connection_failures"]["pass"], \
        f"connection failures, e.g. {failed}; {result['machine_load']}"
    assert crit["streams_complete"]["pass"], f"truncated streams, e.g. {failed}"
    assert crit["no_unexpected_4xx_or_bad_response"]["pass"], failed
    assert crit["cancellations_freed"]["pass"], crit["cancellations_freed"]
    assert crit["server_ready_after"]["pass"], crit["server_ready_after"]
    # Reported, not asserted, in the short form.
    assert "growth" in result["memory"] or not result["memory"]["measured"]
    assert (tmp_path / "soak-short" / "summary.md").exists()
