"""The same features through the official `openai` SDK alone (no greyelephant package).

    GREYELEPHANT_BASE_URL=http://127.0.0.1:8000/v1 python examples/raw_openai.py

`steering` goes in `extra_body`; the report comes back as an extra field
(`response.model_extra["steering"]`, or on a stream chunk with empty `choices`).
Exits non-zero on failure.
"""

import os
import sys

import openai

BASE_URL = os.environ.get("GREYELEPHANT_BASE_URL", "http://127.0.0.1:8000/v1")
STEERING = {"avoid": [{"entity": "Eiffel Tower", "aliases": ["Tour Eiffel"]}],
            "prefer": ["Louvre"], "strategies": ["directive", "logits"]}
MESSAGES = [{"role": "user", "content": "What must I see in Paris?"}]


def main() -> int:
    client = openai.OpenAI(base_url=BASE_URL, api_key=os.environ.get("GREYELEPHANT_API_KEY", "unused"))
    try:
        model = client.models.list().data[0].id

        r = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=40,
                                           temperature=0, extra_body={"steering": STEERING})
        report = r.model_extra["steering"]
        print(r.choices[0].message.content)
        print("report:", {k: report[k] for k in ("strategies", "violations", "revisions")})

        stream = client.chat.completions.create(
            model=model, messages=MESSAGES, max_tokens=40, temperature=0, stream=True,
            stream_options={"include_usage": True}, extra_body={"steering": STEERING})
        text, streamed_report, usage = "", None, None
        for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            if (chunk.model_extra or {}).get("steering"):
                streamed_report = chunk.model_extra["steering"]
            if chunk.usage:
                usage = chunk.usage
        print("streamed:", text)
        print("stream report violations:", streamed_report["violations"],
              "| completion tokens:", usage.completion_tokens)

        try:
            client.chat.completions.create(model=model, messages=MESSAGES,
                                           extra_body={"steering": {"avoid": ["x"],
                                                                    "max_revisions": 99}})
            print("an invalid spec was accepted", file=sys.stderr)
            return 1
        except openai.BadRequestError as exc:
            print("invalid spec ->", exc.status_code, exc.body["param"], "-", exc.body["message"])
    except openai.OpenAIError as exc:
        print(f"request failed: {exc}", file=sys.stderr)
        return 1
    return 0 if report["violations"] == 0 and streamed_report["violations"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
