"""Start the dummy server (bench/dummy_server.py) as a child process and read its counts."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

SERVER = Path(__file__).with_name("dummy_server.py")


class DummyServer:
    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, str(SERVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._proc.stdout is not None
        self.port = int(self._proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"

    def counts(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_bench/counts", timeout=60) as response:
            return json.loads(response.read())

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/_bench/reset", data=b"", method="POST")
        urllib.request.urlopen(request, timeout=10).read()

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
