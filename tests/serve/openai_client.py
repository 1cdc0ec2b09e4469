"""Drives `vidlm serve` with the official openai client (tests/cli_serve.rs runs it).

Usage: openai_client.py BASE_URL MODEL VIDEO_PATH IMAGE_PATH QUESTION
Prints one JSON object with what the client got back.
"""

import base64
import json
import sys

import openai
import urllib.request
from prometheus_client.parser import text_string_to_metric_families

base_url, model, video, image, question = sys.argv[1:6]
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=300)


def video_message(url):
    return [
        {
            "role": "user",
            "content": [
                {"type": "video_url", "video_url": {"url": url}},
                {"type": "text", "text": question},
            ],
        }
    ]


out = {"models": [m.id for m in client.models.list().data]}

# A video question: frames:4 through the de-facto media_io_kwargs extension.
r = client.chat.completions.create(
    model=model,
    messages=video_message("file://" + video),
    max_tokens=12,
    temperature=0,
    extra_body={"media_io_kwargs": {"video": {"num_frames": 4}}},
)
out["video"] = {
    "content": r.choices[0].message.content,
    "finish_reason": r.choices[0].finish_reason,
    "prompt_tokens": r.usage.prompt_tokens,
    "completion_tokens": r.usage.completion_tokens,
    "total_tokens": r.usage.total_tokens,
    "object": r.object,
}

# The same question streamed, with the final usage chunk.
pieces, finish, usage, roles = [], None, None, []
for chunk in client.chat.completions.create(
    model=model,
    messages=video_message("file://" + video),
    max_completion_tokens=12,
    stream=True,
    stream_options={"include_usage": True},
    extra_body={"media_io_kwargs": {"video": {"num_frames": 4}}},
):
    if chunk.usage is not None:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta.role:
            roles.append(c.delta.role)
        if c.delta.content:
            pieces.append(c.delta.content)
        if c.finish_reason:
            finish = c.finish_reason
out["stream"] = {
    "pieces": pieces,
    "finish_reason": finish,
    "roles": roles,
    "prompt_tokens": usage.prompt_tokens if usage else None,
    "completion_tokens": usage.completion_tokens if usage else None,
}

# vidlm's own sampling and time range, the video sent inline as a data: URL.
with open(video, "rb") as f:
    data = "data:video/mp4;base64," + base64.b64encode(f.read()).decode()
r = client.chat.completions.create(
    model=model,
    messages=video_message(data),
    max_tokens=10,
    extra_body={"vidlm": {"sample": "fps:1", "from": 1, "to": "0:04"}},
)
out["ranged"] = {"content": r.choices[0].message.content, "completion_tokens": r.usage.completion_tokens}

# An image question, the image as a data: URL.
with open(image, "rb") as f:
    png = "data:image/png;base64," + base64.b64encode(f.read()).decode()
r = client.chat.completions.create(
    model=model,
    messages=[
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": png}},
                {"type": "text", "text": question},
            ],
        }
    ],
    max_tokens=8,
)
out["image"] = {
    "content": r.choices[0].message.content,
    "prompt_tokens": r.usage.prompt_tokens,
    "completion_tokens": r.usage.completion_tokens,
}

# Errors come back as the client's typed exceptions.
errors = {}
try:
    client.chat.completions.create(model="no-such-model", messages=video_message("file://" + video))
except openai.NotFoundError as e:
    errors["unknown_model"] = [e.status_code, e.body.get("code") if isinstance(e.body, dict) else None]
try:
    client.chat.completions.create(model=model, messages=video_message("file:///etc/passwd"))
except openai.PermissionDeniedError as e:
    errors["outside_root"] = [e.status_code]
try:
    client.chat.completions.create(model=model, messages=video_message("file://Cargo.toml"))
except openai.BadRequestError as e:
    errors["not_a_video"] = [e.status_code, e.message]
out["errors"] = errors

# /metrics as Prometheus' own parser reads it.
text = urllib.request.urlopen(base_url.removesuffix("/v1") + "/metrics", timeout=30).read().decode()
metrics = {}
for family in text_string_to_metric_families(text):
    for s in family.samples:
        key = s.name + "".join(f"|{k}={v}" for k, v in sorted(s.labels.items()))
        metrics[key] = s.value
out["metrics"] = metrics

print(json.dumps(out))
