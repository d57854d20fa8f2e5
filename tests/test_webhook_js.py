"""The JavaScript verifier of docs/webhooks.md accepts what the dispatcher signs and
refuses a tampered body: Ed25519 with Node's own crypto (needs only ``node``), HMAC
with the ``standardwebhooks`` package when Node can resolve it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ilp_receiver.webhooks import (
    generate_ed25519_key,
    generate_hmac_secret,
    parse_key,
    sign_headers,
)
from tests.npm_packages import installed_js_packages

DOCS = Path(__file__).resolve().parent.parent / "docs" / "webhooks.md"
BODY = b'{"data":{"amount":"25000"},"id":"evt_1","type":"payment.received","version":1}'


@pytest.fixture
def verifier(tmp_path: Path) -> Path:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    [script] = re.findall(r"^```js\n(.*?)^```", DOCS.read_text(), re.MULTILINE | re.DOTALL)
    path = tmp_path / "verify.mjs"
    path.write_text(script)
    return path


def run(verifier: Path, body: bytes, headers: dict[str, str], **env: str) -> int:
    result = subprocess.run(
        ["node", str(verifier)],
        input=json.dumps({"headers": headers, "body": body.decode()}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **env},
    )
    return result.returncode


def test_node_verifies_ed25519_deliveries(verifier: Path) -> None:
    secret, public = generate_ed25519_key()
    headers = sign_headers(parse_key(secret), "evt_1", BODY)  # type: ignore[arg-type]
    assert run(verifier, BODY, headers, WEBHOOK_PUBLIC_KEY=public) == 0
    tampered = BODY.replace(b"25000", b"99999")
    assert run(verifier, tampered, headers, WEBHOOK_PUBLIC_KEY=public) != 0
    assert run(verifier, BODY, headers, WEBHOOK_PUBLIC_KEY=generate_ed25519_key()[1]) != 0


def test_standardwebhooks_verifies_hmac_deliveries(verifier: Path) -> None:
    package = installed_js_packages() / "node_modules" / "standardwebhooks"
    # ES modules resolve packages beside the script: link the library there
    modules = verifier.parent / "node_modules"
    modules.mkdir()
    (modules / "standardwebhooks").symlink_to(package)
    secret = generate_hmac_secret()
    headers = sign_headers(parse_key(secret), "evt_1", BODY)  # type: ignore[arg-type]
    assert run(verifier, BODY, headers, WEBHOOK_SECRET=secret) == 0
    assert run(verifier, BODY.replace(b"25000", b"1"), headers, WEBHOOK_SECRET=secret) != 0
