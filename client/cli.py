"""Client commands of the ``greyelephant`` command line: ``chat``, ``complete``, ``models``.

Registration imports nothing but the standard library; each command imports the client
(openai, httpx, pydantic — never vLLM or torch) when it runs. Other command modules
(``eval``, ``bench``, …) reuse :func:`add_connection_args` and :func:`client_from_args`.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from typing import Any

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_VIOLATION = 0, 1, 2, 3


def add_connection_args(parser: argparse.ArgumentParser) -> None:
    """``--base-url``, ``--api-key``, ``--timeout``, ``--max-retries`` (env var defaults)."""
    g = parser.add_argument_group("connection")
    g.add_argument("--base-url", metavar="URL",
                   help="server URL, e.g. http://127.0.0.1:8000/v1 (default: "
                        "$GREYELEPHANT_BASE_URL, else http://127.0.0.1:8000/v1; a bare "
                        "host:port gets /v1)")
    g.add_argument("--api-key", metavar="KEY",
                   help="bearer key for a server started with --api-key "
                        "(default: $GREYELEPHANT_API_KEY)")
    g.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="per-request timeout (default: 600)")
    g.add_argument("--max-retries", type=int, default=2, metavar="N",
                   help="retries on connection errors, 429 and 5xx, with backoff (default: 2)")


def client_from_args(args: argparse.Namespace):
    from greyelephant.client import Client

    return Client(base_url=args.base_url, api_key=args.api_key, timeout=args.timeout,
                  max_retries=args.max_retries)


def _entity(text: str) -> Any:
    """``"Eiffel Tower|Tour Eiffel|La Tour Eiffel"`` → an entity with aliases."""
    name, *aliases = [p.strip() for p in text.split("|")]
    aliases = [a for a in aliases if a]
    return {"entity": name, "aliases": aliases} if aliases else name


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _param(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError("use KEY=VALUE (VALUE is JSON, else a string)")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def _add_generation_args(p: argparse.ArgumentParser, *, chat: bool) -> None:
    what = "message" if chat else "prompt"
    p.add_argument("prompt", nargs="?", default="-",
                   help=f"the user {what}; '-' or omitted: read it from standard input")
    if chat:
        p.add_argument("--system", metavar="TEXT", help="a system message before the prompt")

    s = p.add_argument_group(
        "steering", _wrap("Entities take the form NAME or NAME|ALIAS|ALIAS (e.g. "
                          "'Eiffel Tower|Tour Eiffel'); case, spacing, punctuation and plurals "
                          "are matched by the server anyway. Omitted fields: the server's "
                          "defaults."))
    s.add_argument("--avoid", action="append", default=None, metavar="ENTITY",
                   help="an entity the answer must not name (repeatable)")
    s.add_argument("--prefer", action="append", default=None, metavar="ENTITY",
                   help="an entity to steer the answer towards (repeatable)")
    s.add_argument("--strategies", metavar="LIST",
                   help="comma-separated: directive, logits, critique_revise "
                        "(default: the server's policy, normally directive,logits)")
    s.add_argument("--max-revisions", type=int, metavar="N",
                   help="critique-revise rounds (with critique_revise)")
    s.add_argument("--prefer-bias", type=float, metavar="X",
                   help="logit bonus for preferred entities (with logits)")
    s.add_argument("--no-repeat-ngram", type=int, metavar="N",
                   help="loop guard of the logits strategy: no token N-gram twice (0 = off)")
    s.add_argument("--revision-style", choices=["rewrite", "in_context"],
                   help="critique-revise's prompt (with critique_revise)")
    s.add_argument("--max-rollbacks", type=int, metavar="N",
                   help="rollbacks per choice of the logits strategy (0 = off)")
    s.add_argument("--steering", type=_json_object, metavar="JSON",
                   help='a whole steering object, e.g. \'{"avoid": [{"entity": "x", '
                        '"aliases": ["y"]}]}\'; the flags above override its fields')

    g = p.add_argument_group("generation")
    g.add_argument("--model", "-m", help="model name (default: the server's first model)")
    g.add_argument("--adapter", help="a loaded LoRA adapter's name (instead of --model)")
    g.add_argument("--max-tokens", type=int, metavar="N", help="maximum new tokens")
    g.add_argument("--temperature", "-t", type=float, metavar="T",
                   help="sampling temperature (0 = greedy)")
    g.add_argument("--top-p", type=float, metavar="P", help="nucleus sampling")
    g.add_argument("--seed", type=int, help="sampling seed")
    g.add_argument("--stop", action="append", default=None, metavar="TEXT",
                   help="stop sequence (repeatable)")
    g.add_argument("--param", action="append", type=_param, default=[], metavar="KEY=VALUE",
                   help="any other request field, VALUE as JSON (e.g. top_k=40, "
                        "repetition_penalty=1.1); repeatable")

    o = p.add_argument_group("output")
    o.add_argument("--stream", action="store_true",
                   help="print the answer as it is generated")
    o.add_argument("--json", action="store_true",
                   help="print the whole response (text, choices, usage, steering) as JSON "
                        "on stdout instead of the text")
    o.add_argument("--fail-on-violation", action="store_true",
                   help=f"exit {EXIT_VIOLATION} if the final text still names an avoided entity")
    add_connection_args(p)


def _read_prompt(value: str) -> str | None:
    if value != "-":
        return value
    if sys.stdin is None or sys.stdin.isatty():
        return None
    text = sys.stdin.read()
    return text if text.strip() else None


def _request_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = dict(args.param)
    for name in ("max_tokens", "temperature", "top_p", "seed", "stop"):
        value = getattr(args, name)
        if value is not None:
            kw[name] = value
    if args.avoid is not None:
        kw["avoid"] = [_entity(a) for a in args.avoid]
    if args.prefer is not None:
        kw["prefer"] = [_entity(a) for a in args.prefer]
    for name in ("strategies", "max_revisions", "prefer_bias", "no_repeat_ngram",
                 "revision_style", "max_rollbacks", "steering", "model", "adapter"):
        value = getattr(args, name)
        if value is not None:
            kw[name] = value
    return kw


def _run_generation(args: argparse.Namespace, chat: bool) -> int:
    from greyelephant.client import GreyElephantError

    prompt = _read_prompt(args.prompt)
    if prompt is None:
        print("greyelephant: error: give the prompt as an argument or on stdin", file=sys.stderr)
        return EXIT_USAGE
    kw = _request_kwargs(args)
    if chat and args.system is not None:
        kw["system"] = args.system
    out = sys.stdout
    try:
        with client_from_args(args) as client:
            call = client.chat if chat else client.complete
            if args.stream:
                with call(prompt, stream=True, **kw) as stream:
                    for delta in stream:
                        if not args.json and delta.index == 0:
                            out.write(delta)
                            out.flush()
                    response = stream.final()
                if not args.json:
                    out.write("\n")
            else:
                response = call(prompt, **kw)
                if not args.json:
                    out.write(response.text + "\n")
    except GreyElephantError as exc:
        return _fail(exc, args)
    if args.json:
        json.dump(response.to_json(), out, ensure_ascii=False, indent=2)
        out.write("\n")
    elif response.steering is not None:
        print(response.steering.summary(), file=sys.stderr)
    out.flush()
    if args.fail_on_violation and response.steering is not None and response.steering.violations:
        return EXIT_VIOLATION
    return EXIT_OK


def _fail(exc: Exception, args: argparse.Namespace) -> int:
    from greyelephant.client import APIConnectionError, resolve_base_url

    if isinstance(exc, APIConnectionError):
        print(f"greyelephant: error: {exc.message} ({resolve_base_url(args.base_url)})",
              file=sys.stderr)
    else:
        print(f"greyelephant: error: {exc}", file=sys.stderr)
    return EXIT_ERROR


def _chat(args: argparse.Namespace) -> int:
    return _run_generation(args, chat=True)


def _complete(args: argparse.Namespace) -> int:
    return _run_generation(args, chat=False)


def _models(args: argparse.Namespace) -> int:
    from greyelephant.client import GreyElephantError

    try:
        with client_from_args(args) as client:
            models = client.models()
    except GreyElephantError as exc:
        return _fail(exc, args)
    if args.json:
        json.dump([m.model_dump(mode="json") for m in models], sys.stdout, indent=2)
        print()
    else:
        for m in models:
            print(m.id if m.parent is None else f"{m.id}\t(adapter of {m.parent})")
    return EXIT_OK


def _wrap(text: str) -> str:
    return textwrap.fill(text, 79)


_EXIT_CODES = (f"exit status: {EXIT_OK} ok, {EXIT_ERROR} request failed (the server's message "
               f"on stderr), {EXIT_USAGE} bad arguments, {EXIT_VIOLATION} avoided entity "
               "named (with --fail-on-violation)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``chat``, ``complete`` and ``models`` to the ``greyelephant`` command tree."""
    chat = sub.add_parser(
        "chat", help="send one chat message to a server, with steering",
        description=_wrap("Send one chat message to a greyelephant server and print the "
                          "answer. The steering report (what the server did: strategies, "
                          "violations, revisions) goes to stderr, or into the JSON with --json."),
        epilog='example:\n  greyelephant chat "Tell me about elephants." --avoid "pink elephant" \\\n'
               '    --prefer "grey elephant" --strategies directive,logits --stream\n\n'
               + _wrap(_EXIT_CODES),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_generation_args(chat, chat=True)
    chat.set_defaults(func=_chat)

    comp = sub.add_parser(
        "complete", help="continue a text prompt (/v1/completions), with steering",
        description=_wrap("Send a raw text prompt to /v1/completions and print the "
                          "continuation. Steering works as for 'chat' (the directive is "
                          "prepended to the prompt)."),
        epilog='example:\n  greyelephant complete "The most famous landmark in Paris is the" \\\n'
               '    --avoid "Eiffel Tower" --strategies logits --max-tokens 20\n\n'
               + _wrap(_EXIT_CODES),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_generation_args(comp, chat=False)
    comp.set_defaults(func=_complete)

    models = sub.add_parser(
        "models", help="list the models a server serves (base model and LoRA adapters)",
        description="List GET /v1/models: the base model first, then loaded LoRA adapters. "
                    "The first one is the default model of 'chat' and 'complete'.")
    models.add_argument("--json", action="store_true", help="print the full entries as JSON")
    add_connection_args(models)
    models.set_defaults(func=_models)


__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_USAGE", "EXIT_VIOLATION", "add_connection_args",
           "client_from_args", "register"]
