"""Load test: many gradio_client sessions at once against a local server, on one shared SmolLM2.

    .venv/bin/python benchmarks/load.py [--sessions 16] [--requests 20] [--pause 0] [--own-prompts]

1. Starts the app and sends every request of the mix one at a time: the serial results.
2. Restarts it (the time to the first served page is the *second start*), loads every offline model,
   waits until the server's start-up work is done, then runs the sessions at once, each sending its
   requests back to back.
3. Runs the same sessions against a Gradio app that only echoes: the reference, what Gradio and
   gradio_client cost on this machine with no work at all.
4. Prints errors, results that differ from the serial ones, p50 / p95 latency and their ratio to the
   reference, peak RSS of the server.

The mix is what learners do in class: a few shared example prompts of 32 tokens, explored with the
layer, head, temperature and routing settings across the tabs (a setting that only picks what to draw
reuses the tab's cached forward pass; a new prompt runs the model). By default a session sends its next
request as soon as the last one is answered; --pause S gives each learner a time to read or type before each
request, drawn uniformly between 0 and 2 S seconds (the same draws in the reference run).

--own-prompts is a class where every learner types prompts of their own (issue #19's case): each request
brings a new 32-token prompt (a place of the corpus no other request uses, so no answer or forward is
shared) to the LM-head, attention or causal-mask tab, after 2 to 6 s of reading. Target on 2 cores: 32
learners, p50 under 300 ms, p95 under 1.5 s, no errors, every result equal to the serial one.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

PROMPTS = [  # cut to their first 32 SmolLM2 tokens at start
    "The history of the printing press begins in the fifteenth century, when a goldsmith in Mainz combined "
    "movable metal type with an oil-based ink and a screw press, and within fifty years",
    "Photosynthesis is the process by which green plants use sunlight, water and carbon dioxide to make sugar; "
    "the oxygen we breathe is a by-product of this reaction, released through small pores in the leaves",
    "Once upon a time, in a small village at the edge of a dark forest, there lived an old woodcutter and his "
    "clever daughter who could read the stars and the weather",
    "To train a neural network, we show it many examples, measure how wrong its answers are with a loss "
    "function, and then adjust the "
    "weights a little in the direction that lowers the loss",
]
# (API endpoint, settings that vary with the session i and the request j)
KINDS = [
    ("/tokenize", lambda i, j: {}),
    ("/causal_mask", lambda i, j: {"Layer": (i + j) % 30, "Head": j % 9}),
    ("/attention_head", lambda i, j: {"Layer": (i * 7 + j) % 30, "Head": (i + j) % 9}),
    ("/lm_head", lambda i, j: {"Temperature (0 = greedy)": [0.0, 0.7, 1.0, 1.5][j % 4],
                               "Top-p (1 = off)": [1.0, 0.9][i % 2]}),
    ("/contextual_embeddings", lambda i, j: {"Layer (0 = embeddings)": (i + 3 * j) % 31}),
    ("/moe", lambda i, j: {"Experts per token (top-k)": 1 + (i + j) % 3}),
    ("/flow", lambda i, j: {}),
]
# --own-prompts: what a class does when each learner types a prompt of their own, then reads
OWN_KINDS = [("/lm_head", lambda i, j: {}), ("/attention", lambda i, j: {"Layer": (i + j) % 30}),
             ("/causal_mask", lambda i, j: {"Layer": (i + j) % 30, "Head": j % 9})]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, log: Path, env: dict | None = None) -> tuple[subprocess.Popen, float]:
    """The app in its own process (with `env`, default this one's), and seconds from launch to the first served page."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
            return proc, time.perf_counter() - start
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(log.read_text()) from None
            time.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until_idle(log: Path, limit: float = 180.0) -> float:
    """Seconds until the server says its start-up work (app.warm_up: UMAP's numba compile, about 20 s of CPU,
    begun after the first request) is done, so the sessions meet a server in steady state."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit and "start-up work done" not in log.read_text():
        time.sleep(0.5)
    return time.perf_counter() - start


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def endpoints() -> dict[str, tuple[int, list]]:
    """API name -> (fn_index, input components) of each public endpoint, from a build of the app."""
    import app
    demo = app.build_app()
    return {f"/{f.api_name}": (index, f.inputs) for index, f in demo.fns.items() if f.api_visibility == "public"}


def own_prompt(session: int, j: int, tokenizer) -> str:
    """A prompt no other request sends: 32 tokens of the corpus, from a place of its own."""
    text = (ROOT / "assets" / "data" / "shakespeare.txt").read_text()
    start = (session * 7919 + j * 104729) % (len(text) - 2000)
    start = text.index(" ", start) + 1
    return tokenizer.decode(tokenizer.encode(" ".join(text[start:start + 1000].split()))[:32])


def requests_for(session: int, count: int, api, kinds=KINDS, prompt=None) -> list[tuple[int, tuple]]:
    """The session's requests: (fn_index, arguments). `prompt(session, j)` gives each request its own text;
    by default the sessions share PROMPTS."""
    out = []
    for j in range(count):
        name, settings = kinds[(session + j) % len(kinds)]
        index, inputs = api[name]
        chosen = settings(session, j)
        args = []
        for c in inputs:
            label = getattr(c, "label", None)
            if label == "Model":
                args.append("smollm2-135m")
            elif label in ("Text", "Sentence"):
                args.append(prompt(session, j) if prompt else PROMPTS[(session + j // len(kinds)) % len(PROMPTS)])
            elif label in chosen:
                args.append(chosen[label])
            else:
                args.append(c.value)
        out.append((index, tuple(args)))
    return out


def canonical(result) -> str:
    return json.dumps(result, sort_keys=True, default=str)


def run_one(client, index: int, args: tuple):
    return client.predict(*args, fn_index=index)


def run_sessions(port: int, plan: dict[int, list], reading: tuple[float, float] = (0, 0)) -> tuple[list, list, list, float]:
    """Every session's requests in turn (back to back, or a reading time drawn from `reading` seconds before each), all
    sessions at once, each with its own gradio_client.
    Returns (latencies, errors, (session, fn_index, arguments, result, seconds) per answer, wall seconds)."""
    from gradio_client import Client
    latencies, errors, results = [], [], []
    lock = threading.Lock()
    barrier = threading.Barrier(len(plan))

    def session(s: int) -> None:
        # ssl_verify=False: the server is plain http; with it on, gradio_client builds a TLS context (loading
        # every CA certificate) for each request, ~100 ms of the same two cores the server runs on
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, ssl_verify=False)
        draws = random.Random(s)
        barrier.wait()
        for index, a in plan[s]:
            time.sleep(draws.uniform(*reading))
            t = time.perf_counter()
            try:
                result = run_one(client, index, a)
            except Exception as e:  # noqa: BLE001 - counted and printed
                with lock:
                    errors.append(f"session {s}: {type(e).__name__}: {str(e)[:120]}")
                continue
            with lock:
                latencies.append(time.perf_counter() - t)
                results.append((s, index, a, result, latencies[-1]))  # compared once all sessions are done

    start = time.perf_counter()
    threads = [threading.Thread(target=session, args=(s,)) for s in plan]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return latencies, errors, results, time.perf_counter() - start


REFERENCE_APP = """
import sys, gradio as gr
with gr.Blocks() as demo:
    text, out = gr.Textbox(), gr.Textbox()
    text.submit(lambda t: t, text, out, concurrency_limit=2)
demo.queue().launch(server_port=int(sys.argv[1]))
"""


def reference(sessions: int, requests: int, reading: tuple[float, float]) -> tuple[float, float, float]:
    """The same sessions against a Gradio app that only echoes its input: what Gradio and gradio_client
    themselves cost on this machine. Returns (p50, p95, requests per second)."""
    port = free_port()
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", REFERENCE_APP, str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.perf_counter() - start > 60:
                    raise SystemExit("the reference app did not start") from None
                time.sleep(0.1)
        plan = {s: [(0, (PROMPTS[(s + j) % len(PROMPTS)],)) for j in range(requests)] for s in range(sessions)}
        latencies, errors, _, wall = run_sessions(port, plan, reading)
        if errors:
            raise SystemExit(f"the reference app failed: {errors[0]}")
    finally:
        proc.terminate()
        proc.wait(30)
    return statistics.median(latencies), statistics.quantiles(latencies, n=20)[18], len(latencies) / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--pause", type=float, default=0.0, help="mean seconds a learner reads before each request")
    parser.add_argument("--own-prompts", action="store_true",
                        help="every request brings a new prompt of its own to the LM-head, attention or causal-mask "
                             "tab (nothing is cached), and learners read 2 to 6 s before each (the --pause is ignored)")
    args = parser.parse_args()
    from gradio_client import Client

    from core.weights import zoo
    tok = zoo.load("smollm2-135m").tokenizer
    PROMPTS[:] = [tok.decode(tok.encode(p)[:32]) for p in PROMPTS]
    print("prompt tokens:", [len(tok.encode(p)) for p in PROMPTS])
    reading = (2.0, 6.0) if args.own_prompts else (0.0, 2 * args.pause)
    api = endpoints()
    names = {index: name for name, (index, _) in api.items()}
    if args.own_prompts:
        plan = {s: requests_for(s, args.requests, api, OWN_KINDS, lambda s, j: own_prompt(s, j, tok))
                for s in range(args.sessions)}
    else:
        plan = {s: requests_for(s, args.requests, api) for s in range(args.sessions)}
    unique = list({canonical(r): r for reqs in plan.values() for r in reqs}.values())
    logs = Path(os.environ.get("TMPDIR", "/tmp"))

    port = free_port()
    proc, first_start = start_server(port, logs / "load-serial.log")
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, ssl_verify=False)
        serial, serial_s = {}, {}
        for index, a in unique:
            t = time.perf_counter()
            serial[canonical((index, a))] = canonical(run_one(client, index, a))
            serial_s.setdefault(names[index], []).append(time.perf_counter() - t)
    finally:
        proc.terminate()
        proc.wait(30)
    print(f"serial: {len(unique)} distinct requests, median {statistics.median(sum(serial_s.values(), [])) * 1000:.0f} ms "
          f"(first start to page: {first_start:.1f} s)")

    proc, second_start = start_server(port, logs / "load-concurrent.log")
    try:
        warm = Client(f"http://127.0.0.1:{port}/", verbose=False, ssl_verify=False)
        index, _ = api["/facts"]
        t = time.perf_counter()
        for name, problem in zoo.available().items():
            if problem is None:
                run_one(warm, index, (name,))
        print(f"second start to first served page: {second_start:.1f} s; loading every offline model: "
              f"{time.perf_counter() - t:.1f} s; start-up work done "
              f"{wait_until_idle(logs / 'load-concurrent.log'):.1f} s later")
        cpu_before, own_before = cpu_seconds(proc.pid), time.process_time()
        latencies, errors, results, wall = run_sessions(port, plan, reading)
        server_cpu, client_cpu = cpu_seconds(proc.pid) - cpu_before, time.process_time() - own_before
        rss = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    mismatches = [(s, index) for s, index, a, result, _ in results if canonical(result) != serial[canonical((index, a))]]
    by_kind = {}
    for _, index, _, _, seconds in results:
        by_kind.setdefault(names[index], []).append(seconds)
    q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else [float("nan")] * 19
    total = args.sessions * args.requests
    print(f"{args.sessions} sessions x {args.requests} requests = {total} in {wall:.1f} s "
          f"({total / wall:.1f} requests/s), {os.cpu_count()} cores, reading time {reading[0]:g} to {reading[1]:g} s"
          + (", every request a new prompt" if args.own_prompts else ""))
    print(f"errors: {len(errors)}   results different from the serial ones: {len(mismatches)}")
    print(f"CPU per request: server {server_cpu / len(results) * 1000:.0f} ms, the sessions' gradio_client "
          f"{client_cpu / len(results) * 1000:.0f} ms; server busy {server_cpu / wall:.2f} of {os.cpu_count()} cores")
    for e in errors[:5]:
        print("  ", e)
    print(f"latency p50 {statistics.median(latencies) * 1000:.0f} ms   p95 {q[18] * 1000:.0f} ms   "
          f"max {max(latencies) * 1000:.0f} ms")
    ref_p50, ref_p95, ref_rate = reference(args.sessions, args.requests, reading)
    print(f"reference, the same sessions against an app that only echoes (Gradio + gradio_client alone): "
          f"p50 {ref_p50 * 1000:.0f} ms   p95 {ref_p95 * 1000:.0f} ms   {ref_rate:.1f} requests/s")
    print(f"this app / reference: p50 {statistics.median(latencies) / ref_p50:.1f}x   p95 {q[18] / ref_p95:.1f}x")
    print("per handler (ms): serial median | concurrent p50, p95")
    for name, times in sorted(by_kind.items()):
        p95 = statistics.quantiles(times, n=20)[18] if len(times) > 1 else times[0]
        print(f"  {name:28s} {statistics.median(serial_s[name]) * 1000:7.0f} | {statistics.median(times) * 1000:7.0f} "
              f"{p95 * 1000:7.0f}")
    print(f"peak RSS of the server with every offline model loaded: {rss:.0f} MB")


if __name__ == "__main__":
    main()
