#!/usr/bin/env python3
"""whopgate side by side with nginx, on one machine, in one run.

Starts a fast upstream (nginx `return 200`), then loads each arrangement in turn with wrk on
loopback and prints one table: requests/s, p50, p99 and the ratio of each row to the nginx
proxy_pass row. Then the Whop API economy of the gated rows, the memory of a million cached
decisions, and cold start to ready. Run it through `bench/run` (which builds and installs what
it needs); see the README, section "Performance".
"""

import argparse
import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHOPGATE = os.path.join(ROOT, "target", "release", "whopgate")
AXUM_GATED = os.path.join(ROOT, "target", "release", "examples", "axum_gated")
DECISION_MEMORY = os.path.join(ROOT, "target", "release", "examples", "decision_memory")
PRODUCT = "prod_mockproduct1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=20.0, want=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if want is None or r.status == want:
                    return
        except urllib.error.HTTPError as e:
            if want is None or e.code == want:
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"{url} did not answer in time")


class Procs:
    """Every process the benchmark starts, stopped on exit."""

    def __init__(self):
        self.procs = []

    def start(self, args, **kw):
        p = subprocess.Popen(args, stdout=kw.pop("stdout", subprocess.DEVNULL), stderr=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def stop(self, p):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()

    def stop_all(self):
        for p in reversed(self.procs):
            self.stop(p)


def nginx_conf(tmp, name, workers, body):
    path = os.path.join(tmp, f"{name}.conf")
    with open(path, "w") as f:
        f.write(f"""
worker_processes {workers};
daemon off;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/{name}-body;
  proxy_temp_path {tmp}/{name}-proxy;
  fastcgi_temp_path {tmp}/{name}-fcgi;
  uwsgi_temp_path {tmp}/{name}-uwsgi;
  scgi_temp_path {tmp}/{name}-scgi;
  {body}
}}
""")
    return path


UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(text):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    lat = {}
    for pct, value, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M):
        lat[int(pct)] = float(value) * UNIT[unit]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    requests = int(re.search(r"(\d+) requests in", text).group(1))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {
        "rps": rps,
        "p50": lat.get(50, float("nan")),
        "p99": lat.get(99, float("nan")),
        "requests": requests,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "errors": sum(int(g) for g in errors.groups()) if errors else 0,
    }


def wrk(url, args, seconds, headers=(), lua=None, lua_args=()):
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    if lua:
        cmd += ["-s", lua]
    cmd.append(url)
    if lua_args:
        cmd += ["--"] + list(lua_args)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def metric(admin, name, labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    text = urllib.request.urlopen(f"http://{admin}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def mock_state(path, users):
    with open(path, "w") as f:
        f.write('app_id = "app_mockapp000001"\n\n')
        f.write('[[api_keys]]\nkey = "mock_api_key"\n\n')
        f.write('[[companies]]\nid = "biz_mockcompany01"\ntitle = "Bench Co"\n\n')
        # No [[keys]]: the mock signs with its built-in dev key.
        f.write(f'[[products]]\nid = "{PRODUCT}"\ncompany_id = "biz_mockcompany01"\ntitle = "Bench"\n\n')
        for i in range(users):
            f.write(f'[[users]]\nid = "user_bench{i:09d}"\n\n')
            f.write(f'[[memberships]]\nid = "mem_bench{i:09d}"\nuser_id = "user_bench{i:09d}"\n'
                    f'product_id = "{PRODUCT}"\nstatus = "active"\n\n')


def mint(mock, users):
    conn = http.client.HTTPConnection(mock)
    tokens = []
    for user in users:
        body = json.dumps({"user_id": user, "ttl": "2h"})
        conn.request("POST", "/_mock/token", body, {"content-type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"minting a token failed: {r.status} {data[:200]!r}")
        tokens.append(json.loads(data)["token"])
    return tokens


def gate_config(path, listen, admin, upstream, mock, redis=None):
    redis_url = f'redis_url = "redis://{redis}"' if redis else ""
    with open(path, "w") as f:
        f.write(f"""listen = "{listen}"
upstream = "http://{upstream}"
admin_listen = "{admin}"
# Row (c): nginx on loopback asks {{prefix}}/auth and is believed.
trusted_proxies = ["127.0.0.1/32"]

[whop]
api_key = "mock_api_key"
app_id = "app_mockapp000001"
api_base = "http://{mock}"
# Warming ten thousand users against the mock in seconds needs more than Whop's 600 per minute.
rate_limit_per_minute = 60000

[cache]
ttl = "1h"
negative_ttl = "1h"
max_entries = 1000000
{redis_url}

[[route]]
path = "/public"
public = true

[[route]]
path = "/"
require = ["{PRODUCT}"]
""")


def start_gate(procs, config, env):
    p = procs.start([WHOPGATE, "--config", config], env=env)
    return p


def ready_time(config, admin, env, runs=5):
    """Median time from spawn to /readyz 200."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        p = subprocess.Popen([WHOPGATE, "--config", config], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        try:
            while True:
                try:
                    with urllib.request.urlopen(f"http://{admin}/readyz", timeout=1) as r:
                        if r.status == 200:
                            break
                except (urllib.error.HTTPError, OSError):
                    pass
                if p.poll() is not None:
                    raise RuntimeError("whopgate exited during the cold-start measurement")
                time.sleep(0.001)
            times.append(time.perf_counter() - started)
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(10)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # One run's throughput moves by about 10 % on a shared 2-core machine, and barely less over
    # 3 or 6 s than over 1 s: the spread is between runs, not within one. So many short runs
    # pin the median down better than a few long ones in the same time.
    parser.add_argument("--seconds", type=int, default=1, help="load per measured run (default 1)")
    parser.add_argument("--rounds", type=int, default=48,
                        help="runs per row, interleaved, every other round in reverse order (default 48)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--users", type=int, default=10000, help="distinct users of row (f)")
    parser.add_argument("--only", default="abcdefghij", help="rows to run, e.g. 'bde'")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    procs = Procs()
    tmp = tempfile.mkdtemp(prefix="whopgate-bench-")
    env = dict(os.environ, RUST_LOG="warn", WHOPGATE_WORKERS=os.environ.get("WHOPGATE_WORKERS", "2"))
    try:
        up, proxy_port, auth_port, auth_svc = free_port(), free_port(), free_port(), free_port()
        upstream = f"127.0.0.1:{up}"
        conf = nginx_conf(tmp, "upstream", 1, f"""
  server {{ listen {upstream} reuseport backlog=4096; keepalive_requests 10000000;
           location / {{ return 200 "ok\\n"; }} }}
  server {{ listen 127.0.0.1:{auth_svc} reuseport backlog=4096; keepalive_requests 10000000;
           location / {{ return 204; }} }}""")
        procs.start(["nginx", "-c", conf, "-p", tmp])
        conf = nginx_conf(tmp, "proxy", "auto", f"""
  upstream app {{ server {upstream}; keepalive 256; keepalive_requests 10000000; }}
  upstream auth {{ server 127.0.0.1:{auth_svc}; keepalive 256; keepalive_requests 10000000; }}
  server {{ listen 127.0.0.1:{proxy_port} reuseport backlog=4096; keepalive_requests 10000000;
           location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}
  server {{ listen 127.0.0.1:{auth_port} reuseport backlog=4096; keepalive_requests 10000000;
           location = /_auth {{ internal; proxy_pass http://auth/; proxy_http_version 1.1;
                               proxy_set_header Connection ""; proxy_pass_request_body off;
                               proxy_set_header Content-Length ""; proxy_set_header X-Original-URI $request_uri; }}
           location / {{ auth_request /_auth; proxy_pass http://app; proxy_http_version 1.1;
                        proxy_set_header Connection ""; }} }}""")
        procs.start(["nginx", "-c", conf, "-p", tmp])

        mock_port = free_port()
        mock = f"127.0.0.1:{mock_port}"
        state = os.path.join(tmp, "mock.toml")
        mock_state(state, args.users)
        procs.start([WHOPGATE, "mock-whop", "--listen", mock, "--state", state], env=env)
        for url in (f"http://{upstream}/", f"http://127.0.0.1:{proxy_port}/", f"http://127.0.0.1:{auth_port}/",
                    f"http://{mock}/.well-known/jwks.json"):
            wait_http(url)

        print(f"minting {args.users} user tokens ...", file=sys.stderr)
        users = [f"user_bench{i:09d}" for i in range(args.users)]
        tokens = mint(mock, users)
        one_token = os.path.join(tmp, "one_token.txt")
        many_tokens = os.path.join(tmp, "tokens.txt")
        with open(one_token, "w") as f:
            f.write(tokens[0] + "\n")
        with open(many_tokens, "w") as f:
            f.write("\n".join(tokens) + "\n")
        lua = os.path.join(ROOT, "bench", "tokens.lua")

        gate_port, gate_admin = free_port(), f"127.0.0.1:{free_port()}"
        config = os.path.join(tmp, "whopgate.toml")
        gate_config(config, f"127.0.0.1:{gate_port}", gate_admin, upstream, mock)
        start_gate(procs, config, env)
        wait_http(f"http://{gate_admin}/readyz", want=200)

        # Row (j): (e) on a gate whose decisions are shared through Redis (the warm path must
        # not touch it).
        gate_j = None
        if "j" in args.only:
            redis = f"127.0.0.1:{free_port()}"
            procs.start(["redis-server", "--port", redis.split(":")[1], "--bind", "127.0.0.1", "--save", "",
                         "--appendonly", "no"])
            j_port, j_admin = free_port(), f"127.0.0.1:{free_port()}"
            j_config = os.path.join(tmp, "whopgate-redis.toml")
            gate_config(j_config, f"127.0.0.1:{j_port}", j_admin, upstream, mock, redis=redis)
            start_gate(procs, j_config, env)
            wait_http(f"http://{j_admin}/readyz", want=200)
            gate_j = f"http://127.0.0.1:{j_port}"

        axum_port = free_port()
        axum_config = os.path.join(tmp, "axum.toml")
        gate_config(axum_config, f"127.0.0.1:{axum_port}", f"127.0.0.1:{free_port()}", upstream, mock)
        procs.start([AXUM_GATED, axum_config], env=env)
        wait_http(f"http://127.0.0.1:{axum_port}/public")

        # Row (c): nginx auth_request asking whopgate's forward-auth endpoint, as deploy/nginx.conf
        # does (identity headers copied onto the request to the app).
        fa_port = free_port()
        conf = nginx_conf(tmp, "forward-auth", "auto", f"""
  upstream app {{ server {upstream}; keepalive 256; keepalive_requests 10000000; }}
  upstream whopgate {{ server 127.0.0.1:{gate_port}; keepalive 256; keepalive_requests 10000000; }}
  server {{ listen 127.0.0.1:{fa_port} reuseport backlog=4096; keepalive_requests 10000000;
           location = /.whopgate/auth {{ internal; proxy_pass http://whopgate; proxy_http_version 1.1;
                               proxy_set_header Connection ""; proxy_pass_request_body off;
                               proxy_set_header Content-Length ""; proxy_set_header Host $http_host;
                               proxy_set_header X-Original-URI $request_uri;
                               proxy_set_header X-Original-Method $request_method; }}
           location / {{ auth_request /.whopgate/auth;
                        auth_request_set $whop_user_id $upstream_http_x_whop_user_id;
                        auth_request_set $whop_access_level $upstream_http_x_whop_access_level;
                        proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
                        proxy_set_header X-Whop-User-Id $whop_user_id;
                        proxy_set_header X-Whop-Access-Level $whop_access_level; }} }}""")
        procs.start(["nginx", "-c", conf, "-p", tmp])
        wait_http(f"http://127.0.0.1:{fa_port}/public")

        gate = f"http://127.0.0.1:{gate_port}"
        token_header = f"x-whop-user-token: {tokens[0]}"
        # Every row carries the same request bytes: Whop's app proxy puts the user token on every
        # request, so nginx in front of the app would receive it too. The rows whopgate does not
        # gate carry a padding header exactly as long (same name length, same value length), so
        # (d) stays anonymous and no row is charged for bytes another row does not carry.
        padding = {"headers": [f"x-request-padding: {'p' * len(tokens[0])}"]}
        rows = {
            "a": ("upstream direct (nginx return 200)", f"http://{upstream}/", padding),
            "b": ("nginx proxy_pass, upstream keepalive", f"http://127.0.0.1:{proxy_port}/", padding),
            "c": ("nginx auth_request -> whopgate /auth + proxy_pass", f"http://127.0.0.1:{fa_port}/app",
                  {"headers": [token_header]}),
            "i": ("nginx auth_request (204 service) + proxy_pass", f"http://127.0.0.1:{auth_port}/", padding),
            "d": ("whopgate, public route", f"{gate}/public", padding),
            "e": ("whopgate, gated route, 1 user, warm", f"{gate}/app", {"headers": [token_header]}),
            "f": (f"whopgate, gated, {args.users} users rotating", f"{gate}/app",
                  {"lua": lua, "lua_args": [many_tokens]}),
            "g": ("axum app + GateLayer, gated, 1 user", f"http://127.0.0.1:{axum_port}/app",
                  {"headers": [token_header]}),
            # Not a target: (d) without the token-sized header, so (h) - (d) is what those bytes
            # cost (they travel on to the upstream, which parses them too).
            "h": ("whopgate, public route, bare request", f"{gate}/public", {}),
            "j": ("whopgate, gated, 1 user, warm, redis_url set", f"{gate_j}/app", {"headers": [token_header]}),
        }
        rows = {k: v for k, v in rows.items() if k in args.only}

        # Warm every cache: tokens verified, decisions fetched, connections pooled.
        print("warming up ...", file=sys.stderr)
        for key, (_, url, opts) in rows.items():
            wrk(url, args, 2, **opts)
        if "f" in rows:
            # Twice through every token, so each user's decision is cached.
            wrk(rows["f"][1], args, max(5, args.users // 2000), lua=lua, lua_args=[many_tokens])

        whop_before = metric(gate_admin, "whopgate_whop_api_requests_total", {"endpoint": "access"})
        results = {k: [] for k in rows}
        whop = {}
        for r in range(args.rounds):
            # Every other round backwards, so no row always runs right after the same neighbour.
            order = list(rows.items()) if r % 2 == 0 else list(reversed(rows.items()))
            for key, (_, url, opts) in order:
                before = metric(gate_admin, "whopgate_whop_api_requests_total", {"endpoint": "access"})
                res = wrk(url, args, args.seconds, **opts)
                after = metric(gate_admin, "whopgate_whop_api_requests_total", {"endpoint": "access"})
                results[key].append(res)
                if key in ("e", "f"):
                    whop.setdefault(key, [0, 0])
                    whop[key][0] += after - before
                    whop[key][1] += res["requests"]
                print(f"round {r + 1} ({key}) {res['rps']:.0f} req/s", file=sys.stderr)
        del whop_before

        med = {k: {m: statistics.median(x[m] for x in v) for m in ("rps", "p50", "p99")} for k, v in results.items()}
        bad = {k: sum(x["non2xx"] + x["errors"] for x in v) for k, v in results.items()}

        def ratio(key, base):
            """Median over rounds of key's throughput over base's in the same round: the
            machine's speed drifts between rounds, and a ratio of runs moments apart cancels it."""
            return statistics.median(a["rps"] / b["rps"] for a, b in zip(results[key], results[base]))

        def spread(key, base):
            """The middle half of the same-round ratios: how far one round can be trusted."""
            ratios = [a["rps"] / b["rps"] for a, b in zip(results[key], results[base])]
            if len(ratios) < 4:
                return ""
            q1, _, q3 = statistics.quantiles(ratios, n=4)
            return f" (middle half of rounds {q1:.2f} to {q3:.2f})"

        print()
        print(f"{'row':<50} {'req/s':>9} {'p50':>8} {'p99':>8} {'vs (b)':>7}")
        for key, (label, _, _) in rows.items():
            m = med[key]
            ratio_text = f"{ratio(key, 'b'):.2f}" if "b" in results else "-"
            note = f"  ({bad[key]} non-2xx/errors!)" if bad[key] else ""
            print(f"({key}) {label:<46} {m['rps']:>9.0f} {m['p50']:>6.2f}ms {m['p99']:>6.2f}ms {ratio_text:>7}{note}")

        print()
        print("Whop API calls per 1 000 requests (the SDK-per-request pattern: 1 000):")
        for key in ("e", "f"):
            if key in whop and whop[key][1]:
                calls, reqs = whop[key]
                print(f"  ({key}) {calls * 1000 / reqs:.4f}  ({calls:.0f} calls in {reqs} requests, caches warm)")
        if "f" in rows:
            print(f"  warming (f) asked Whop once per user: {args.users} calls "
                  f"({args.users / 600:.1f} min at Whop's 600/min)")

        print()
        mem = subprocess.run([DECISION_MEMORY, "1000000"], capture_output=True, text=True, check=True).stdout.strip()
        print(f"memory, 1 000 000 cached decisions: {mem}")
        cold_config = os.path.join(tmp, "cold.toml")
        cold_admin = f"127.0.0.1:{free_port()}"
        gate_config(cold_config, f"127.0.0.1:{free_port()}", cold_admin, upstream, mock)
        cold = ready_time(cold_config, cold_admin, env)
        print(f"cold start to ready (/readyz 200, JWKS loaded): {cold * 1000:.1f} ms (median of 5)")

        print()
        checks = []
        if {"b", "e"} <= med.keys():
            checks.append(("(e) >= 0.9 x (b) throughput", ratio("e", "b") >= 0.9,
                           f"{ratio('e', 'b'):.2f}{spread('e', 'b')}"))
            checks.append(("(e) p99 <= (b) p99 + 1 ms", med["e"]["p99"] <= med["b"]["p99"] + 1.0,
                           f"{med['e']['p99']:.2f} vs {med['b']['p99']:.2f} ms"))
        if {"i", "e"} <= med.keys():
            checks.append(("(e) >= 1.5 x (i), nginx auth_request to a 204 service", ratio("e", "i") >= 1.5,
                           f"{ratio('e', 'i'):.2f}{spread('e', 'i')}"))
        if {"e", "f"} <= med.keys():
            checks.append(("(f) >= 0.8 x (e)", ratio("f", "e") >= 0.8,
                           f"{ratio('f', 'e'):.2f}{spread('f', 'e')}"))
        if {"d", "e"} <= med.keys():
            diff = 1 - ratio("e", "d")
            checks.append(("(d) - (e) within 5 %", abs(diff) <= 0.05,
                           f"{diff * 100:+.1f} %, (e)/(d) {ratio('e', 'd'):.2f}{spread('e', 'd')}"))
        if {"e", "j"} <= med.keys():
            diff = 1 - ratio("j", "e")
            checks.append(("(j), Redis on, within 5 % of (e)", abs(diff) <= 0.05,
                           f"{diff * 100:+.1f} %, (j)/(e) {ratio('j', 'e'):.2f}{spread('j', 'e')}"))
        mib = float(re.search(r"growth_mib=([\d.]+)", mem).group(1))
        checks.append(("1 000 000 decisions <= 200 MiB", mib <= 200, f"{mib:.0f} MiB"))
        checks.append(("ready <= 100 ms", cold <= 0.1, f"{cold * 1000:.0f} ms"))
        for name, ok, value in checks:
            print(f"  {'PASS' if ok else 'FAIL'}  {name}: {value}")
        if {"d", "h"} <= med.keys():
            diff = 1 - ratio("d", "h")
            print(f"  info  (h) - (d), what a token-sized header costs on the public route: {diff * 100:+.1f} %, "
                  f"(d)/(h) {ratio('d', 'h'):.2f}{spread('d', 'h')}")

        if args.json:
            with open(args.json, "w") as f:
                json.dump({"median": med, "runs": results, "whop": whop, "memory": mem, "cold_start_s": cold,
                           "checks": [{"name": n, "pass": ok, "value": v} for n, ok, v in checks]}, f, indent=2)
    finally:
        procs.stop_all()


if __name__ == "__main__":
    main()
