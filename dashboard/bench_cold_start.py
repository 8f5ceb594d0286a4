"""Benchmark: cold start of the dashboard to its first rendered chart, on the committed traces.

    python -m dashboard.bench_cold_start [--runs 3]

Each run starts `streamlit run dashboard` fresh (new process, empty caches) and, once its health check
answers, one headless Debian chromium on the page; the DevTools protocol asks the page every 50 ms
whether a Plotly chart has been drawn (an SVG inside .js-plotly-plot). Prints the time from the
server's start to its health check, and from the browser's request to the first drawn chart (the
user's wait for an already running dashboard) and from the server's start (a cold start). Target: under 3 s.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the process's whole group, then SIGKILL to whatever is left of it after 10 s."""
    import signal
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.perf_counter() + 10
    while time.perf_counter() < deadline:
        try:
            os.killpg(proc.pid, 0)            # raises once no process of the group is left
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=5)


CHART_DRAWN = "!!document.querySelector('.js-plotly-plot svg.main-svg')"


def first_chart(chromium: str, url: str, t0: float, screenshot: str | None = None,
                probe: str | None = None, ready: str = CHART_DRAWN) -> tuple[float, float]:
    """Seconds from t0 (and from the browser's launch) to the first drawn chart (or to `ready`, a JavaScript
    expression, turning true), polled through the DevTools protocol; with `screenshot`, a PNG of the page then;
    with `probe` (a JavaScript expression), its value on the drawn page is appended to the returned tuple."""
    import json

    from websockets.sync.client import connect  # a Streamlit dependency
    debug_port = _port()
    # The profile folder goes only after every chromium process (they form one process group) has exited:
    # its helper processes may still write there after the main one quits.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        t_browser = time.perf_counter()
        browser = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                                    "--disable-background-networking", "--no-first-run", "--disable-component-update",
                                    "--disable-sync", f"--user-data-dir={profile}",
                                    f"--remote-debugging-port={debug_port}", url],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            ws_url = None
            while ws_url is None:
                try:
                    targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{debug_port}/json", timeout=1))
                    ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")
                except (OSError, StopIteration, ValueError):
                    time.sleep(0.02)

            for attempt in range(100):  # the page's DevTools socket may refuse while chromium starts
                try:
                    conn = connect(ws_url, max_size=2**26)
                    break
                except OSError:
                    if attempt == 99:
                        raise
                    time.sleep(0.1)
            with conn:
                ident, t_chart = 0, None
                while t_chart is None:
                    if time.perf_counter() - t0 > 60:
                        raise RuntimeError(f"no chart within 60 s ({url})")
                    ident += 1
                    conn.send(json.dumps({"id": ident, "method": "Runtime.evaluate", "params": {
                        "expression": ready, "returnByValue": True}}))
                    while True:
                        msg = json.loads(conn.recv())
                        if msg.get("id") == ident:
                            break
                    if msg.get("result", {}).get("result", {}).get("value"):
                        t_chart = time.perf_counter()
                    else:
                        time.sleep(0.05)
                probed = None
                if probe:
                    conn.send(json.dumps({"id": -1, "method": "Runtime.evaluate",
                                          "params": {"expression": probe, "returnByValue": True}}))
                    while True:
                        msg = json.loads(conn.recv())
                        if msg.get("id") == -1:
                            break
                    probed = msg.get("result", {}).get("result", {}).get("value")
                if screenshot:
                    import base64
                    conn.send(json.dumps({"id": 0, "method": "Page.captureScreenshot", "params": {"format": "png"}}))
                    while True:
                        msg = json.loads(conn.recv())
                        if msg.get("id") == 0:
                            break
                    with open(screenshot, "wb") as f:
                        f.write(base64.b64decode(msg["result"]["data"]))
            return (t_chart - t0, t_chart - t_browser) + ((probed,) if probe else ())
        finally:
            _stop_group(browser)


def one_run(chromium: str) -> tuple[float, float]:
    port = _port()
    t0 = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", os.path.join(ROOT, "dashboard", "streamlit_app.py"),
                               "--server.headless", "true", "--server.port", str(port), "--browser.gatherUsageStats",
                               "false"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1).read()
                break
            except OSError:
                if time.perf_counter() - t0 > 60:
                    raise RuntimeError("the dashboard did not start within 60 s")
                time.sleep(0.05)
        t_ready = time.perf_counter() - t0
        return t_ready, first_chart(chromium, f"http://127.0.0.1:{port}", t0)
    finally:
        server.terminate()
        server.wait(timeout=20)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        sys.exit("needs Debian chromium (apt-get install chromium)")
    results = [one_run(chromium) for _ in range(a.runs)]
    ready = [r[0] for r in results]
    cold = [r[1][0] for r in results]
    page = [r[1][1] for r in results]
    print(f"server ready {statistics.median(ready):.2f} s; first chart {statistics.median(cold):.2f} s after the "
          f"server's start (cold start; runs {', '.join(f'{c:.2f}' for c in cold)}), {statistics.median(page):.2f} s "
          f"after the browser's launch; target < 3 s")


if __name__ == "__main__":
    main()
