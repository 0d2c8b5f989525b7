"""The Ray dashboard as a user sees it after giving the token (docs/ray_dashboard.png).

    python docs/dashboard_screenshot.py http://127.0.0.1:8265 docs/ray_dashboard.png [path]

Ray 2.60's dashboard opens with an "Authentication Token Required" dialog; what is typed
there is POSTed to /api/authenticate, which answers with the HttpOnly cookie
`ray-authentication-token` that every later request carries. This script types the token into
that dialog in headless Chromium (Debian's `chromium`) over the DevTools protocol, submits it
and saves the page. The token comes from `ray get-auth-token` (RAY_AUTH_MODE=token).
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp


async def shoot(url: str, out: Path, path: str, token: str) -> None:
    port = 9333
    profile = tempfile.mkdtemp(prefix="chromium-")
    browser = subprocess.Popen(
        [shutil.which("chromium") or "chromium", "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
         f"--remote-debugging-port={port}", "--window-size=1400,900", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(60):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json") as resp:
                    pages = [p for p in json.load(resp) if p["type"] == "page"]
                    break
            except OSError:
                time.sleep(0.5)
        async with aiohttp.ClientSession() as http, \
                http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            ids = iter(range(1, 10**6))

            async def cdp(method: str, **params: object) -> dict:
                msg_id = next(ids)
                await ws.send_json({"id": msg_id, "method": method, "params": params})
                async for msg in ws:
                    data = json.loads(msg.data)
                    if data.get("id") == msg_id:
                        return data.get("result", {})
                return {}

            await cdp("Page.enable")
            await cdp("Page.navigate", url=url.rstrip("/") + path)
            await asyncio.sleep(6)
            # as a person does: the token into the dialog's field, then SUBMIT
            await cdp("Runtime.evaluate", expression=(
                "document.querySelector('div[role=dialog] input').focus()"))
            await cdp("Input.insertText", text=token)
            said = await cdp("Runtime.evaluate", expression=(
                "[...document.querySelectorAll('div[role=dialog] button')]"
                ".find(b => /submit/i.test(b.textContent)).click() || 'clicked'"))
            print("token dialog:", said.get("result", {}).get("value"))
            await asyncio.sleep(10)  # the dashboard fills its tables from its API
            shot = await cdp("Page.captureScreenshot", format="png")
            out.write_bytes(base64.b64decode(shot["data"]))
    finally:
        browser.kill()
        browser.wait()
        shutil.rmtree(profile, ignore_errors=True)


def main() -> None:
    url, out = sys.argv[1], Path(sys.argv[2])
    path = sys.argv[3] if len(sys.argv) > 3 else "/#/overview"
    ray = Path(sys.executable).with_name("ray")
    said = subprocess.run([str(ray), "get-auth-token"], capture_output=True, text=True,
                          check=True, env={"RAY_AUTH_MODE": "token", "PATH": "/usr/bin:/bin",
                                           "HOME": str(Path.home())})
    token = said.stdout.strip().splitlines()[-1]
    asyncio.run(shoot(url, out, path, token))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
