"""vLLM's serving benchmark (``vllm.benchmarks.serve``, the package's own load generator),
driven in this process: vLLM is imported once (~15 s on 2 cores) instead of once per run.

* random workload: vLLM's ``random`` dataset, ``/v1/completions``, one ``--extra-body``;
* chat workload: ``SampleRequest`` objects built from the eval file's cases, with the
  case's messages (``chat_messages``) and the request's own ``steering`` object
  (``request_overrides``, merged into the body per request by vLLM's client) — so each
  request can avoid its own case's entity, and one run can mix strategies. vLLM's
  ``get_samples`` is swapped for the run's list for the duration of the call.

Every run is greedy (temperature 0) with ``ignore_eos`` and fixed output lengths, skips the
client's ready check (the server is up), and returns vLLM's result dict (per-request TTFT,
ITL, latency, output length, errors).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

from .scenarios import ChatRequest

_SERVE = None


def _serve():
    global _SERVE
    if _SERVE is None:
        import vllm.benchmarks.serve as serve

        _SERVE = serve
    return _SERVE


def _parser():
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    p = FlexibleArgumentParser()
    _serve().add_cli_args(p)
    return p


def build_argv(base: str, model: str, tokenizer: str, *, workload: str, num_prompts: int,
               output_len: int, input_len: int = 128, concurrency: int | None = None,
               request_rate: float | None = None, extra_body: dict | None = None,
               goodput: tuple[float, float] | None = None, dataset_path: str | None = None,
               seed: int = 0) -> list[str]:
    """The ``vllm bench serve`` command line of one run (also what the report records)."""
    argv = ["--base-url", base, "--model", model, "--tokenizer", tokenizer,
            "--num-prompts", str(num_prompts), "--ignore-eos", "--temperature", "0",
            "--seed", str(seed), "--percentile-metrics", "ttft,tpot,itl,e2el",
            "--metric-percentiles", "50,90,99", "--disable-tqdm", "--save-detailed",
            "--ready-check-timeout-sec", "0"]
    if workload == "random":
        argv += ["--backend", "openai", "--endpoint", "/v1/completions",
                 "--dataset-name", "random", "--random-input-len", str(input_len),
                 "--random-output-len", str(output_len)]
    else:
        argv += ["--backend", "openai-chat", "--endpoint", "/v1/chat/completions",
                 "--dataset-name", "custom", "--dataset-path", dataset_path or "",
                 "--custom-output-len", str(output_len), "--skip-chat-template"]
    if concurrency:
        argv += ["--max-concurrency", str(concurrency)]
    if request_rate:
        argv += ["--request-rate", f"{request_rate:g}", "--burstiness", "1.0"]  # Poisson
    if extra_body:
        argv += ["--extra-body", json.dumps(extra_body)]
    if goodput:
        argv += ["--goodput", f"ttft:{goodput[0]:g}", f"tpot:{goodput[1]:g}"]
    return argv


def chat_samples(requests: list[ChatRequest], tokenizer, output_len: int) -> list:
    from vllm.benchmarks.datasets import SampleRequest

    out = []
    for i, r in enumerate(requests):
        ids = tokenizer.apply_chat_template(r.messages, add_generation_prompt=True,
                                            tokenize=True)
        if isinstance(ids, dict):  # BatchEncoding in newer transformers
            ids = ids["input_ids"]
        out.append(SampleRequest(
            prompt=r.messages[-1]["content"], prompt_len=len(ids),
            expected_output_len=output_len, request_id=f"ge-{i}",
            chat_messages=r.messages,
            request_overrides={"steering": r.steering} if r.steering else None))
    return out


def run(argv: list[str], *, samples: list | None = None, log: Path | None = None) -> dict:
    """One ``vllm bench serve`` run in process; its printout goes to ``log``."""
    serve = _serve()
    args = _parser().parse_args(argv)
    logging.getLogger("vllm").setLevel(logging.WARNING)
    original = serve.get_samples
    if samples is not None:
        serve.get_samples = lambda _args, _tokenizer: list(samples)
    sink = open(log, "a") if log else io.StringIO()
    try:
        with contextlib.redirect_stdout(sink):
            print("$ vllm bench serve", " ".join(argv))
            return serve.main(args)
    finally:
        serve.get_samples = original
        sink.close()


def tokenizer_for(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)
