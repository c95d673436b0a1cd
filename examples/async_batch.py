"""Async batch: several steered requests at once with AsyncClient, plus an async stream.

    GREYELEPHANT_BASE_URL=http://127.0.0.1:8000/v1 python examples/async_batch.py

The server batches concurrent requests in one engine; each gets its own steering.
Exits non-zero if any request fails or any answer names its avoided entity.
"""

import asyncio
import sys

from greyelephant.client import AsyncClient, GreyElephantError

JOBS = [
    ("Name a famous landmark in Paris.", "Eiffel Tower", "Louvre"),
    ("Name a large animal.", "pink elephant", "grey elephant"),
    ("Name a planet.", "Mars", "Jupiter"),
    ("Name a programming language.", "Java", "Python"),
]


async def main() -> int:
    async with AsyncClient() as client:
        try:
            results = await asyncio.gather(*(
                client.chat(prompt, avoid=avoid, prefer=prefer, strategies="directive,logits",
                            max_tokens=24, temperature=0)
                for prompt, avoid, prefer in JOBS))
            stream = await client.complete("Once upon a time, a grey elephant", stream=True,
                                           avoid="pink", strategies="logits", max_tokens=16,
                                           temperature=0)
            parts = [delta async for delta in stream]
        except GreyElephantError as exc:
            print(f"request failed: {exc}", file=sys.stderr)
            return 1
    failed = 0
    for (prompt, avoid, _), r in zip(JOBS, results, strict=True):
        print(f"{prompt!r} (avoid {avoid!r}) -> {r.text.strip()!r}  [{r.steering.summary()}]")
        failed += r.steering.violations > 0
    print("streamed completion:", repr("".join(parts)), "|", stream.steering.summary())
    failed += stream.steering.violations > 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
