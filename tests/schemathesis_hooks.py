"""schemathesis hooks of the contract test (tests/test_serve.py, SCHEMATHESIS_HOOKS=tests.schemathesis_hooks).

A JSON schema cannot say that a string names a photo that decodes, or that bytes are one: generated products would
name no file and send random bytes, and the service rightly answers those with a 422 naming the product (the schema
documents it; test_posted_photos_are_embedded_as_extraction_embeds_them checks it). So before each call of a
schema-valid case every photo its products give (a non-empty path, base64 bytes) becomes a real one of the demo
sample, and every such request must then be answered 2xx (tests/schemathesis.toml). Cases made to break the schema
are sent as generated. An upload's file is left as generated (see tests/schemathesis.toml).
"""

from __future__ import annotations

import base64
from pathlib import Path

import schemathesis
from schemathesis import GenerationMode

DEMO = Path(__file__).resolve().parents[1] / "mmgbm" / "data" / "demo"
PHOTO = "images/10122.jpg"  # relative to the demo's images_root, where the contract test's project reads photos
PHOTO_BYTES = (DEMO / PHOTO).read_bytes()
REAL = {"image": PHOTO, "image_base64": base64.b64encode(PHOTO_BYTES).decode()}


@schemathesis.hook
def before_call(context, case, kwargs) -> None:
    meta = case.meta
    modes = [] if meta is None else [meta.generation.mode, *(c.mode for c in meta.components.values())]
    if not modes or any(mode != GenerationMode.POSITIVE for mode in modes):
        return
    # New containers, never edits: schemathesis shares a body between the cases it derives from one another, and
    # a negative case must be sent as generated.
    if isinstance(case.body, list):
        case.body = [
            {**p, **{k: v for k, v in REAL.items() if isinstance(p.get(k), str) and p[k]}} if isinstance(p, dict) else p
            for p in case.body
        ]
