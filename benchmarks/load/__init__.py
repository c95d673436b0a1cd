"""The load-testing suite behind ``greyelephant bench load`` and ``greyelephant bench quality``.

* :mod:`.scenarios` — the scenario matrix and the presets (pure);
* :mod:`.stats` — percentiles, goodput under SLOs, ratios (pure);
* :mod:`.history` — comparison with the previous run, the results history, pruning;
* :mod:`.report` — JSON + markdown reports, the README's headline block;
* :mod:`.plots` — PNG plots (matplotlib);
* :mod:`.servers` — the servers compared (greyelephant, vLLM's own OpenAI server) and the
  KV-cache share that lets them start on the machine;
* :mod:`.vllm_client` / :mod:`.guidellm_client` — the two load generators (vLLM's serving
  benchmark, in process; guidellm, in its own environment);
* :mod:`.run` — ``bench load``; :mod:`.quality` — ``bench quality``.

docs/benchmarks.md describes the suite for users.
"""
