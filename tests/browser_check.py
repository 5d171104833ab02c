"""Render an HTML report in headless Chromium (Debian's `chromium`) and list how each image loaded.

`chromium_binary()` installs the package with apt-get when it is missing and this process may (root,
apt-get present); otherwise the calling test is skipped with the reason.
"""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--virtual-time-budget=10000", "--dump-dom"]
# appended to a copy of the page: records every image's state once the page has loaded
PROBE = ("<script>window.addEventListener('load',()=>{document.body.setAttribute('data-images',JSON.stringify("
         "[...document.images].map(i=>({alt:i.alt,complete:i.complete,width:i.naturalWidth,height:i.naturalHeight}))))})</script>")


def chromium_binary() -> str:
    found = shutil.which("chromium")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("chromium is not installed and apt-get cannot install it here (not root or no apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    if subprocess.run(install, capture_output=True, env=env, timeout=900).returncode != 0:
        subprocess.run(["apt-get", "update"], capture_output=True, env=env, timeout=600)
        result = subprocess.run(install, capture_output=True, env=env, timeout=900)
        if result.returncode != 0:
            pytest.skip(f"apt-get install chromium failed: {result.stderr.decode(errors='replace')[-300:]}")
    return shutil.which("chromium") or pytest.skip("chromium still missing after apt-get install")


def images_in_browser(page: Path) -> list[dict]:
    """Each <img> of ``page`` as Chromium loaded it: alt, complete, natural width and height."""
    binary = chromium_binary()
    with tempfile.TemporaryDirectory() as folder:
        probe = Path(folder) / "page.html"
        probe.write_text(page.read_text("utf-8").replace("</body>", PROBE + "</body>"), "utf-8")
        result = subprocess.run([binary, *FLAGS, f"--user-data-dir={folder}/profile", probe.as_uri()],
                                capture_output=True, timeout=120)
    dom = result.stdout.decode("utf-8", errors="replace")
    match = re.search(r'data-images="([^"]*)"', dom)
    assert match, f"chromium did not render the page (rc {result.returncode}): {result.stderr.decode(errors='replace')[-500:]}"
    return json.loads(html.unescape(match.group(1)))
