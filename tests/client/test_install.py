"""``pip install ./clients/python`` into a fresh venv brings the client and httpx: neither
the server nor its store drivers."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "python"


def test_the_client_installs_alone(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(CLIENT)],
        check=True,
        timeout=300,
    )
    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"],
        check=True,
        capture_output=True,
        text=True,
    )
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert {"pollybot-leads-client", "httpx"} <= names
    assert not names & {"pollybot-leads", "pymongo", "motor", "aiohttp", "secantusdb"}, names
    probe = "import pollybot_leads_client as c; print(c.__version__, c.Client.__name__)"
    out = subprocess.run([python, "-c", probe], check=True, capture_output=True, text=True)
    assert out.stdout.split() == ["0.1.0", "Client"]
    assert sys.version_info >= (3, 11)
