"""Quickstart: one steered chat request with the greyelephant client.

    GREYELEPHANT_BASE_URL=http://127.0.0.1:8000/v1 python examples/quickstart.py

Exits non-zero if the request fails or the answer names the avoided entity.
"""

import sys

from greyelephant.client import Client, Entity, GreyElephantError


def main() -> int:
    client = Client()  # base URL: $GREYELEPHANT_BASE_URL, default http://127.0.0.1:8000/v1
    try:
        print("models:", [m.id for m in client.models()])
        r = client.chat(
            "What's the one landmark I absolutely must see on my first trip to Paris?",
            avoid=Entity("Eiffel Tower", aliases=["Tour Eiffel"]),
            prefer="Louvre",
            strategies=["directive", "logits"],   # logits: the guarantee
            max_tokens=40,
            temperature=0,
        )
    except GreyElephantError as exc:
        print(f"request failed: {exc}", file=sys.stderr)
        return 1
    print(r.text)
    report = r.steering
    print(report.summary())
    print(f"usage: {r.usage.prompt_tokens} prompt + {r.usage.completion_tokens} completion tokens")
    if "eiffel tower" in r.text.lower() or report.violations:
        print("the avoided entity was named", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
