"""Streaming: print the answer as it is generated, then the steering report and usage.

    GREYELEPHANT_BASE_URL=http://127.0.0.1:8000/v1 python examples/streaming.py

The server sends the steering report after the text, so it is read once the loop ends.
Exits non-zero if the request fails, nothing streams, or the report is missing.
"""

import sys

from greyelephant.client import Client, GreyElephantError, Steering

SPEC = Steering(avoid=["pink elephant"], prefer=["grey elephant"],
                strategies=["directive", "logits"])


def main() -> int:
    client = Client()
    try:
        with client.chat("Describe an elephant in two sentences.", steering=SPEC,
                         max_tokens=40, temperature=0, stream=True) as stream:
            for delta in stream:            # str pieces (TextDelta, with .index)
                print(delta, end="", flush=True)
        print()
    except GreyElephantError as exc:
        print(f"\nrequest failed: {exc}", file=sys.stderr)
        return 1
    if not stream.text or stream.steering is None or stream.usage is None:
        print("incomplete stream", file=sys.stderr)
        return 1
    print(stream.steering.summary())
    print(f"completion tokens: {stream.usage.completion_tokens}")
    return 0 if stream.steering.violations == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
