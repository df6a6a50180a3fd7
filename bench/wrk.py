"""HTTP publishes driven by ``wrk`` (Debian: ``apt-get install wrk``): one prepared request,
sent again and again over keep-alive connections.

The request is any :class:`client.Request` holding one HTTP/1.1 request (a
Pusher publish signed once, an Nchan POST): :func:`lua_script` turns it into
the script that makes ``wrk`` send exactly that method, path, headers and body.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile

from client import Request
from servers import child_setup

#: Headers that wrk writes itself.
_OWN_HEADERS = {"host", "content-length"}


def missing() -> str | None:
    """Why wrk cannot run here and how to install it; None when it can."""
    return None if shutil.which("wrk") else "wrk is not installed (apt-get install wrk)"


def _lua(text: str | bytes) -> str:
    """``text`` as a Lua string literal (bytes other than printable ASCII as ``\\ddd``)."""
    data = text.encode() if isinstance(text, str) else text
    return '"' + "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\{b:03d}"
                         for b in data) + '"'


def lua_script(request: Request) -> str:
    """A wrk script that sends ``request`` (one request, not a pipelined group)."""
    if request.answers != 1:
        raise ValueError("wrk sends one request at a time")
    head, body = request.raw.split(b"\r\n\r\n", 1)
    start, *headers = head.decode().split("\r\n")
    method, path, _ = start.split(" ")
    lines = [f"wrk.method = {_lua(method)}", f"wrk.path = {_lua(path)}",
             f"wrk.body = {_lua(body)}"]
    for header in headers:
        name, value = header.split(":", 1)
        if name.lower() not in _OWN_HEADERS:
            lines.append(f"wrk.headers[{_lua(name)}] = {_lua(value.strip())}")
    return "\n".join(lines) + "\n"


_RATE = re.compile(r"Requests/sec:\s*([\d.]+)")
_FAILED = re.compile(r"Non-2xx or 3xx responses:\s*(\d+)")
_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


async def run(port: int, request: Request, *, connections: int, threads: int, seconds: int,
              cpu: int | None) -> dict[str, float]:
    """Run wrk against 127.0.0.1:``port`` for ``seconds`` (on ``cpu`` when given); its
    requests/s, requests answered other than 2xx, and socket errors."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua_script(request))
    try:
        process = await asyncio.create_subprocess_exec(
            "wrk", "-c", str(connections), "-t", str(threads), "-d", f"{seconds}s",
            "-s", script.name, f"http://127.0.0.1:{port}", stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, preexec_fn=child_setup(cpu))
        try:
            output = (await asyncio.wait_for(process.communicate(), seconds + 30))[0].decode()
        except asyncio.TimeoutError:
            process.kill()  # the one wrk started here
            await process.wait()
            raise
    finally:
        os.unlink(script.name)
    rate = _RATE.search(output)
    if process.returncode != 0 or rate is None:
        raise RuntimeError(f"wrk failed ({process.returncode}): {output[-500:]}")
    failed = _FAILED.search(output)
    errors = _ERRORS.search(output)
    return {"rate": float(rate.group(1)), "failed": int(failed.group(1)) if failed else 0,
            "errors": sum(int(n) for n in errors.groups()) if errors else 0}
