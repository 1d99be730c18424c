"""One Flask chat app, three ways to call the upstream: the webapp benchmark's contenders.

``WEBAPP_BACKEND`` picks how ``POST /chat`` (``{"message": ...}`` ->
``{"reply": ...}``) calls ``UPSTREAM_URL`` (an OpenAI-compatible base URL):

``llmpool``
    One module-level ``llmpool.Client`` per process (built before the fork
    under ``--preload``), a pool of ``LLMPOOL_MAX_CONNECTIONS`` (the thread
    count), no plugins: the example app's set-up without its extras.
``openai``
    One module-level ``openai.OpenAI`` client per process, with its defaults.
``requests``
    ``requests.post`` per call: a new connection for every call.

Run under gunicorn by tests/benchmarks/test_webapp_bench.py::

    WEBAPP_BACKEND=llmpool UPSTREAM_URL=http://127.0.0.1:8000/v1 \\
        gunicorn -k gthread -w 2 --threads 8 --preload --chdir tests/benchmarks/scripts \\
        webapp_backends:app
"""

from __future__ import annotations

import os
from collections.abc import Callable

from flask import Flask, jsonify, request

BACKEND = os.environ.get("WEBAPP_BACKEND", "llmpool")
UPSTREAM = os.environ["UPSTREAM_URL"]
MODEL = "gpt-4o-mini"
KEY = "sk-bench"


def llmpool_chat() -> Callable[[str], str]:
    import llmpool

    threads = int(os.environ.get("LLMPOOL_MAX_CONNECTIONS", "8"))
    client = llmpool.Client(UPSTREAM, api_key=KEY, pool=llmpool.PoolConfig(max_connections=threads))

    def chat(message: str) -> str:
        return str(client.chat(MODEL, [{"role": "user", "content": message}]).text)

    return chat


def openai_chat() -> Callable[[str], str]:
    import openai

    client = openai.OpenAI(base_url=UPSTREAM, api_key=KEY)

    def chat(message: str) -> str:
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": message}]
        )
        return str(reply.choices[0].message.content)

    return chat


def requests_chat() -> Callable[[str], str]:
    import requests

    url = UPSTREAM.rstrip("/") + "/chat/completions"
    headers = {"Authorization": f"Bearer {KEY}"}

    def chat(message: str) -> str:
        payload = {"model": MODEL, "messages": [{"role": "user", "content": message}]}
        response = requests.post(url, json=payload, headers=headers, timeout=30)
        response.raise_for_status()
        return str(response.json()["choices"][0]["message"]["content"])

    return chat


BACKENDS = {"llmpool": llmpool_chat, "openai": openai_chat, "requests": requests_chat}
call_upstream = BACKENDS[BACKEND]()
app = Flask(__name__)


@app.post("/chat")
def chat():  # type: ignore[no-untyped-def]
    message = request.get_json()["message"]
    return jsonify(reply=call_upstream(message))
