"""Write the OpenAPI document to a file (default openapi.json) without serving."""

from __future__ import annotations

import json
import sys

from pollybot_leads.app import create_app
from pollybot_leads.http.openapi import spec_key
from pollybot_leads.settings import load_settings


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else "openapi.json"
    settings = load_settings().replace(cursor_secret="export-only")
    spec = create_app(settings)[spec_key]
    with open(out, "w") as fh:
        json.dump(spec, fh, indent=2)
        fh.write("\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
