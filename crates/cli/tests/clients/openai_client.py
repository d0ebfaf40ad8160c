"""Speaks to `minicpmv serve` with the official `openai` package, as an app would: a plain
completion, a streamed one, one with an image (a data URI, and raw base64), and a refused one.
Prints what it got as one JSON object for the Rust test (tests/integration/serve/api.rs) to check.

    python3 openai_client.py BASE_URL IMAGE.png
"""
import base64
import json
import sys

import openai

base_url, image_path = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=120)
greedy = {"max_tokens": 8, "temperature": 0, "extra_body": {"ignore_eos": True}}
out = {}

r = client.chat.completions.create(model="minicpmv", messages=[{"role": "user", "content": "Hello"}], **greedy)
assert r.object == "chat.completion", r
assert r.choices[0].message.role == "assistant", r
out["plain"] = r.choices[0].message.content
out["plain_finish"] = r.choices[0].finish_reason
out["plain_usage"] = [r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens]

pieces, finishes, usage = [], [], None
stream = client.chat.completions.create(model="minicpmv", messages=[{"role": "user", "content": "Hello"}],
                                        stream=True, stream_options={"include_usage": True}, **greedy)
for chunk in stream:
    if chunk.usage is not None:
        usage = [chunk.usage.prompt_tokens, chunk.usage.completion_tokens, chunk.usage.total_tokens]
    for c in chunk.choices:
        if c.delta.content:
            pieces.append(c.delta.content)
        if c.finish_reason:
            finishes.append(c.finish_reason)
out["stream"] = "".join(pieces)
out["stream_pieces"] = len(pieces)
out["stream_finish"] = finishes
out["stream_usage"] = usage

raw = base64.b64encode(open(image_path, "rb").read()).decode()
question = "What is in the image?"
for key, url in (("image", "data:image/png;base64," + raw), ("image_raw_base64", raw)):
    r = client.chat.completions.create(model="minicpmv", messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}},
        {"type": "text", "text": question},
    ]}], **greedy)
    out[key] = r.choices[0].message.content
    out[key + "_usage"] = [r.usage.prompt_tokens, r.usage.completion_tokens]

try:
    client.chat.completions.create(model="minicpmv", messages=[], **greedy)
    out["error"] = None
except openai.BadRequestError as e:
    out["error"] = {"status": e.status_code, "param": e.param, "type": e.type, "message": e.message}

models = client.models.list()
out["models"] = [m.id for m in models.data]
print(json.dumps(out))
