"""Screenshots of the Dagster UI, rendered by headless Chromium, and the GraphQL it sent.

    .venv/bin/python benchmarks/ui_screenshot.py --dagster-home DIR --out OUT_DIR \\
        "/assets/indexed_documents" \\
        "partitions=/assets/indexed_documents?view=partitions" \\
        "check=/assets/indexed_documents?view=checks&checkDetail=NAME#click:Partitions@last"

Starts `dagster-webserver -m MODULE -h 127.0.0.1 -p PORT` (or `-f FILE`) with DAGSTER_HOME=DIR, waits until it
answers and the code location is loaded, drives Debian's /usr/bin/chromium over the DevTools
protocol (loopback only), and for each page: navigates, waits until no GraphQL request has been in
flight for --idle seconds (the UI is a single-page app: the load event comes long before the
data), runs the `#click:TEXT` steps (clicks the first tab/button/link whose text is TEXT, or the
Nth with `TEXT@N`, the last with `TEXT@last`: e.g. `#click:Partitions@last` for the check's
Partitions tab, which is not in the URL and comes after the asset's own Partitions tab), takes OUT_DIR/NAME.png and records every
GraphQL operation the page sent (name, milliseconds, response bytes) in OUT_DIR/graphql.json.
Then it stops Chromium and the webserver.

`--simple` instead shoots each plain URL with Chromium's own command line (no clicks, no
GraphQL log):

    chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \\
      --disable-background-networking --disable-component-update --disable-sync \\
      --user-data-dir=$(mktemp -d) --window-size=1600,1000 --virtual-time-budget=15000 \\
      --screenshot=out.png URL
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(base: str, query: str) -> dict:
    request = urllib.request.Request(
        f"{base}/graphql", data=json.dumps({"query": query}).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def wait_for_webserver(base: str, process: subprocess.Popen, timeout: float) -> None:
    """Until the webserver answers and every code location is LOADED (fail on a load error)."""
    deadline = time.monotonic() + timeout
    query = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dagster-webserver exited with {process.returncode}")
        try:
            entries = graphql(base, query)["data"]["workspaceOrError"]["locationEntries"]
        except (urllib.error.URLError, ConnectionError, KeyError, TypeError, TimeoutError):
            time.sleep(0.5)
            continue
        if entries and all(e["loadStatus"] == "LOADED" for e in entries):
            errors = [e for e in entries if (e["locationOrLoadError"] or {}).get("__typename") == "PythonError"]
            if errors:
                raise RuntimeError(f"code location failed to load: {errors[0]['locationOrLoadError']['message']}")
            return
        time.sleep(0.5)
    raise TimeoutError(f"dagster-webserver did not load its code location within {timeout}s")


def start_webserver(dagster_home: Path, target: list[str], port: int, log: Path) -> subprocess.Popen:
    env = dict(os.environ, DAGSTER_HOME=str(dagster_home))
    binary = Path(sys.executable).parent / "dagster-webserver"
    command = [str(binary), *target, "-h", "127.0.0.1", "-p", str(port)]
    # From the instance folder, as `dagster dev` is run from a project folder: a dagster.yaml's
    # relative paths (the default one's `.quivr/dagster`) and QUIVR_DATA_DIR's default `.quivr`
    # then resolve where that folder's runs were recorded, not in this repository.
    return subprocess.Popen(
        command, cwd=dagster_home, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the process group we started, SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class Cdp:
    """Just enough of the Chrome DevTools protocol, over one browser websocket."""

    def __init__(self, url: str):
        from websockets.sync.client import connect

        self._connection = connect(url, max_size=None, open_timeout=10)
        self.ws = self._connection.__enter__()
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self.next_id += 1
        message: dict = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def pump(self, seconds: float) -> None:
        """Collect events for `seconds`."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = json.loads(self.ws.recv(timeout=left))
            except TimeoutError:
                return
            if "method" in message:
                self.events.append(message)

    def close(self) -> None:
        self._connection.__exit__(None, None, None)


class GraphqlLog:
    """GraphQL requests of one page, from the Network domain's events."""

    def __init__(self):
        self.requests: dict[str, dict] = {}

    def feed(self, events: list[dict]) -> None:
        for event in events:
            method, params = event["method"], event.get("params", {})
            if method == "Network.requestWillBeSent" and params["request"]["url"].split("?")[0].endswith("/graphql"):
                body = params["request"].get("postData") or "{}"
                try:
                    name = json.loads(body).get("operationName")
                except ValueError:
                    name = None
                self.requests[params["requestId"]] = {"operation": name, "start": params["timestamp"]}
            elif (
                method in ("Network.loadingFinished", "Network.loadingFailed") and params["requestId"] in self.requests
            ):
                entry = self.requests[params["requestId"]]
                entry["ms"] = round((params["timestamp"] - entry["start"]) * 1000, 1)
                entry["bytes"] = params.get("encodedDataLength")
                entry["failed"] = method == "Network.loadingFailed"
        events.clear()

    def in_flight(self) -> int:
        return sum(1 for r in self.requests.values() if "ms" not in r)

    def summary(self) -> list[dict]:
        return [
            {k: v for k, v in r.items() if k != "start"}
            for r in sorted(self.requests.values(), key=lambda r: r["start"])
        ]


CLICK_JS = """
(text, nth) => {
  const candidates = [...document.querySelectorAll('[role=tab], button, a, [role=button], [role=menuitem]')];
  let matches = candidates.filter((e) => e.innerText && e.innerText.trim() === text);
  if (!matches.length) matches = candidates.filter((e) => e.innerText && e.innerText.trim().startsWith(text));
  if (!matches.length) {
    // Rows of the partition lists are plain elements: the innermost ones showing exactly TEXT.
    const same = (e) => e.innerText && e.innerText.trim() === text;
    matches = [...document.querySelectorAll('body *')].filter((e) => same(e) && ![...e.children].some(same));
  }
  const element = nth < 0 ? matches[matches.length + nth] : matches[nth];
  if (!element) return false;
  element.scrollIntoView({block: 'center'});
  element.click();
  return true;
}
"""


def click_expression(argument: str) -> str:
    """`TEXT`, `TEXT@2` (the second match) or `TEXT@last`, as a call of CLICK_JS."""
    text, _, which = argument.rpartition("@") if "@" in argument else (argument, "", "1")
    nth = -1 if which == "last" else int(which) - 1
    return f"({CLICK_JS})({json.dumps(text)}, {nth})"


def wait_idle(cdp: Cdp, session: str, log: GraphqlLog, idle: float, timeout: float) -> None:
    """Until the page is complete and no GraphQL request was in flight for `idle` seconds."""
    deadline = time.monotonic() + timeout
    quiet_since = None
    while time.monotonic() < deadline:
        cdp.pump(0.2)
        log.feed(cdp.events)
        state = cdp.call("Runtime.evaluate", {"expression": "document.readyState", "returnByValue": True}, session)
        ready = state.get("result", {}).get("value") == "complete"
        if ready and log.requests and log.in_flight() == 0:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= idle:
                return
        else:
            quiet_since = None
    print(f"  (not idle after {timeout}s: {log.in_flight()} GraphQL requests in flight)", file=sys.stderr)


def shoot_with_cdp(
    base: str, pages: list[tuple[str, str]], out: Path, width: int, height: int, idle: float, timeout: float
) -> dict:
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    chromium = subprocess.Popen(
        [
            shutil.which("chromium") or "/usr/bin/chromium",
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "--remote-debugging-port=0",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(out / "chromium.log").open("wb"),
        start_new_session=True,
    )
    report: dict = {}
    try:
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (active.exists() and len(active.read_text().splitlines()) >= 2):
            if time.monotonic() > deadline or chromium.poll() is not None:
                raise RuntimeError("chromium did not open its DevTools port (see chromium.log)")
            time.sleep(0.2)
        port, path = active.read_text().splitlines()[:2]
        cdp = Cdp(f"ws://127.0.0.1:{port}{path}")
        try:
            for name, spec in pages:
                path_part, *steps = spec.split("#")
                target = cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
                session = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
                cdp.call("Network.enable", {}, session)
                cdp.call("Page.enable", {}, session)
                # Dismiss the "Join the Dagster community" dialog (and its dagster.io iframe) the
                # UI opens on localhost, as a click on Skip would, without touching the instance.
                cdp.call(
                    "Page.addScriptToEvaluateOnNewDocument",
                    {"source": "localStorage.setItem('communityNux', JSON.stringify('1'));"},
                    session,
                )
                cdp.call(
                    "Emulation.setDeviceMetricsOverride",
                    {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                    session,
                )
                log = GraphqlLog()
                started = time.monotonic()
                cdp.call("Page.navigate", {"url": base + path_part}, session)
                wait_idle(cdp, session, log, idle, timeout)
                for step in steps:
                    action, _, argument = step.partition(":")
                    if action != "click":
                        raise ValueError(f"unknown step {step!r} (only #click:TEXT)")
                    clicked = cdp.call(
                        "Runtime.evaluate", {"expression": click_expression(argument), "returnByValue": True}, session
                    )
                    if not clicked.get("result", {}).get("value"):
                        print(f"  {name}: nothing to click named {argument!r}", file=sys.stderr)
                    wait_idle(cdp, session, log, idle, timeout)
                shot = cdp.call("Page.captureScreenshot", {"format": "png"}, session)
                (out / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))
                report[name] = {"url": spec, "seconds": round(time.monotonic() - started, 2), "graphql": log.summary()}
                print(f"{out / (name + '.png')}: {len(log.requests)} GraphQL requests, {report[name]['seconds']}s")
                cdp.call("Target.closeTarget", {"targetId": target})
        finally:
            cdp.close()
    finally:
        stop(chromium)
        shutil.rmtree(profile, ignore_errors=True)
    return report


def shoot_simple(base: str, pages: list[tuple[str, str]], out: Path, width: int, height: int, budget_ms: int) -> dict:
    # A fresh browser profile cannot be told the community dialog was dismissed: mark it seen on
    # the instance instead (the UI's own Skip does both; this writes DAGSTER_HOME/.nux/nux.yaml).
    graphql(base, "mutation SetNuxSeen { setNuxSeen }")
    report = {}
    for name, spec in pages:
        profile = tempfile.mkdtemp(prefix="chromium-profile-")
        target = out / f"{name}.png"
        subprocess.run(
            [
                shutil.which("chromium") or "/usr/bin/chromium",
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--virtual-time-budget={budget_ms}",
                f"--screenshot={target}",
                base + spec.split("#")[0],
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )
        shutil.rmtree(profile, ignore_errors=True)
        report[name] = {"url": spec}
        print(target)
    return report


def page_name(spec: str) -> tuple[str, str]:
    if "=" in spec.split("?")[0].split("#")[0] and not spec.startswith("/"):
        name, _, spec = spec.partition("=")
        return name, spec
    slug = re.sub(r"[^A-Za-z0-9]+", "_", spec).strip("_") or "root"
    return slug[:80], spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pages", nargs="+", help="UI paths, optionally NAME=PATH and #click:TEXT steps")
    parser.add_argument("--dagster-home", required=True, type=Path, help="instance folder (DAGSTER_HOME)")
    parser.add_argument("--out", required=True, type=Path, help="folder for NAME.png, graphql.json, logs")
    parser.add_argument("--module", default="quivr_pipelines.definitions", help="code location module (-m)")
    parser.add_argument("--python-file", type=Path, help="code location file (-f), instead of --module")
    parser.add_argument("--port", type=int, default=0, help="webserver port (default: a free one)")
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=1.5, help="seconds without GraphQL in flight = rendered")
    parser.add_argument("--timeout", type=float, default=60, help="max seconds to wait for one page")
    parser.add_argument("--load-timeout", type=float, default=180, help="max seconds for the code location to load")
    parser.add_argument("--simple", action="store_true", help="chromium --screenshot --virtual-time-budget instead")
    parser.add_argument("--budget-ms", type=int, default=15000, help="virtual time budget for --simple")
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    args.dagster_home.mkdir(parents=True, exist_ok=True)
    port = args.port or free_port()
    base = f"http://127.0.0.1:{port}"
    pages = [page_name(spec) for spec in args.pages]
    target = ["-f", str(args.python_file.resolve())] if args.python_file else ["-m", args.module]
    webserver = start_webserver(args.dagster_home.resolve(), target, port, args.out / "webserver.log")
    try:
        wait_for_webserver(base, webserver, args.load_timeout)
        if args.simple:
            report = shoot_simple(base, pages, args.out, args.width, args.height, args.budget_ms)
        else:
            report = shoot_with_cdp(base, pages, args.out, args.width, args.height, args.idle, args.timeout)
    finally:
        stop(webserver)
    (args.out / "graphql.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
