"""The baseline for bench/ingest.py: a Flask app that answers 202 and does nothing else,
served by the same gunicorn configuration as `exsync web`."""

from flask import Flask

app = Flask(__name__)


@app.post("/webhooks/<path:_anything>")
def accept(_anything: str) -> tuple[str, int]:
    return "", 202
