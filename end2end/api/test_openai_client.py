"""The OpenAI-compatible API through the official `openai` Python package, against a running
release server (scripts/test.sh starts it with the tiny fixture models and makes the key).

Environment: MEDPO_API_BASE (http://127.0.0.1:PORT/v1), MEDPO_API_KEY, MEDPO_SHARED.
"""

import base64
import os
import pathlib

import openai
import pytest

BASE = os.environ["MEDPO_API_BASE"]
KEY = os.environ["MEDPO_API_KEY"]
SHARED = pathlib.Path(os.environ.get("MEDPO_SHARED", pathlib.Path(__file__).resolve().parents[3] / "shared"))
MODEL = "llava-med-tiny"


def client(key=KEY):
    return openai.OpenAI(base_url=BASE, api_key=key, max_retries=0, timeout=60)


def data_url(path, mime):
    return f"data:{mime};base64,{base64.b64encode(pathlib.Path(path).read_bytes()).decode()}"


def question(url, text="Is there a nodule in the left lung?"):
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": text},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }
    ]


SCAN = data_url(SHARED / "fixtures/v1/scan.png", "image/png")


def test_models_are_listed():
    ids = [m.id for m in client().models.list()]
    assert MODEL in ids and "huatuogpt-vision-tiny" in ids


def test_completion_with_an_image_whole_and_streamed():
    c = client()
    whole = c.chat.completions.create(model=MODEL, messages=question(SCAN), max_tokens=10, seed=1)
    choice = whole.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert whole.usage.prompt_tokens > 16 and 1 <= whole.usage.completion_tokens <= 10
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens

    stream = c.chat.completions.create(
        model=MODEL, messages=question(SCAN), max_tokens=10, seed=1, stream=True, stream_options={"include_usage": True}
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for ch in chunk.choices:
            if ch.delta.content:
                pieces.append(ch.delta.content)
            if ch.finish_reason:
                finish = ch.finish_reason
    assert "".join(pieces) == choice.message.content
    assert finish == choice.finish_reason
    assert usage.completion_tokens == whole.usage.completion_tokens


def test_dicom_and_logprobs():
    dcm = data_url(SHARED / "data/dicom/CT_small.dcm", "application/dicom")
    r = client().chat.completions.create(model=MODEL, messages=question(dcm), max_tokens=6, logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 2
        assert abs(t.logprob - t.top_logprobs[0].logprob) < 1e-5  # greedy picks the best


def test_errors_have_openai_statuses():
    with pytest.raises(openai.AuthenticationError):
        client("mpo_not-a-key").models.list()
    with pytest.raises(openai.NotFoundError) as e:
        client().chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client().chat.completions.create(model=MODEL, messages=question("data:image/png;base64,aGVsbG8="))
    assert "could not be used" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client().chat.completions.create(model=MODEL, messages=question(SCAN, "lung " * 5000))
    assert e.value.body["code"] == "context_length_exceeded"
