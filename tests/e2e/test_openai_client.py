"""End to end through HTTP with the official `openai` client: sync, async, streaming."""

import openai
import pytest

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server["v1"], api_key="unused", max_retries=0)


@pytest.fixture
def aclient(server):
    return openai.AsyncOpenAI(base_url=server["v1"], api_key="unused", max_retries=0)


def test_models(client, server):
    from greyelephant.shipped import shipped_adapters

    # the base model first, then every shipped adapter under its directory name
    ids = [m.id for m in client.models.list()]
    assert ids == [server["model"], *(a.name for a in shipped_adapters())]
    assert client.models.retrieve(server["model"]).id == server["model"]


def test_chat_sync(client, server):
    r = client.chat.completions.create(model=server["model"], max_tokens=12, temperature=0,
                                       messages=[{"role": "system", "content": "Be brief."},
                                                 {"role": "user", "content": "Name a planet."}])
    assert r.choices[0].message.content and r.usage.completion_tokens > 0


def test_chat_stream_sync(client, server):
    stream = client.chat.completions.create(
        model=server["model"], max_tokens=12, temperature=0, stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Say hello."}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].usage.completion_tokens > 0


async def test_chat_async_concurrent(aclient, server):
    import asyncio

    async def one(i):
        r = await aclient.chat.completions.create(
            model=server["model"], max_tokens=8, temperature=0,
            messages=[{"role": "user", "content": f"Say the number {i}."}])
        return r.choices[0].message.content

    outs = await asyncio.gather(*(one(i) for i in range(8)))
    assert all(outs)


async def test_async_streaming_completion(aclient, server):
    stream = await aclient.completions.create(model=server["model"], prompt="Once upon a time",
                                              max_tokens=10, temperature=0, stream=True)
    parts = [c.choices[0].text async for c in stream if c.choices]
    assert "".join(parts)


def test_completion_sync(client, server):
    r = client.completions.create(model=server["model"], prompt="2 + 2 =", max_tokens=4,
                                  temperature=0, logprobs=2)
    assert r.choices[0].logprobs.tokens and r.object == "text_completion"


def test_errors_map_to_openai_exceptions(client, server):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=server["model"], temperature=9,
                                       messages=[{"role": "user", "content": "x"}])
    assert "temperature" in str(info.value)
