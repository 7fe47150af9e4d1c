#!/usr/bin/env python3
"""Instructions per request on whopgate's gated path, counted by callgrind.

Wall-clock throughput on a shared 2-core machine moves by ±10 % from run to run; instruction
counts do not, so this is the yardstick for a change to the hot path. It starts the upstream
(nginx `return 200`) and the Whop mock, runs whopgate with one worker under
`valgrind --tool=callgrind`, warms every cache, then counts only the instructions spent while
wrk sends gated requests with one valid user token, and prints instructions per request and the
functions they go to. Run it through `bench/instructions` (which builds and installs what it
needs); see the README, section "Performance".
"""

import argparse
import collections
import glob
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the side-by-side benchmark's helpers)


def self_costs(path):
    """Exclusive instruction count per function in one callgrind dump (uncompressed names)."""
    costs = collections.Counter()
    fn, after_call = None, False
    with open(path) as f:
        for line in f:
            if line.startswith("fn="):
                fn = line[3:].rstrip("\n")
            elif line.startswith("calls="):
                after_call = True  # the next cost line is the call's inclusive cost
            elif line[:1].isdigit() or line[:1] in "+-*":
                parts = line.split()
                if len(parts) >= 2:
                    if after_call:
                        after_call = False
                    else:
                        costs[fn] += int(parts[1])
    return costs


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=8, help="counted load (default 8)")
    parser.add_argument("--top", type=int, default=25, help="functions to list (default 25)")
    parser.add_argument("--path", default="/app", help="request path: /app is gated, /public is not")
    parser.add_argument("--padding", action="store_true",
                        help="send a header as long as the token instead of the token, as bench/run's row (d) does")
    parser.add_argument("--redis", action="store_true", help="share decisions through a redis-server (cache.redis_url)")
    args = parser.parse_args()

    procs = bench.Procs()
    tmp = tempfile.mkdtemp(prefix="whopgate-instructions-")
    env = dict(os.environ, RUST_LOG="warn", WHOPGATE_WORKERS="1")
    try:
        upstream = f"127.0.0.1:{bench.free_port()}"
        conf = bench.nginx_conf(tmp, "upstream", 1, f"""
  server {{ listen {upstream} backlog=4096; keepalive_requests 10000000;
           location / {{ return 200 "ok\\n"; }} }}""")
        procs.start(["nginx", "-c", conf, "-p", tmp])
        mock = f"127.0.0.1:{bench.free_port()}"
        state = os.path.join(tmp, "mock.toml")
        bench.mock_state(state, 1)
        procs.start([bench.WHOPGATE, "mock-whop", "--listen", mock, "--state", state], env=env)
        bench.wait_http(f"http://{upstream}/")
        bench.wait_http(f"http://{mock}/.well-known/jwks.json")
        token = bench.mint(mock, ["user_bench000000000"])[0]

        port, admin = bench.free_port(), f"127.0.0.1:{bench.free_port()}"
        config = os.path.join(tmp, "whopgate.toml")
        redis = None
        if args.redis:
            redis = f"127.0.0.1:{bench.free_port()}"
            procs.start(["redis-server", "--port", redis.split(":")[1], "--bind", "127.0.0.1", "--save", "",
                         "--appendonly", "no"])
            time.sleep(0.5)
        bench.gate_config(config, f"127.0.0.1:{port}", admin, upstream, mock, redis=redis)
        out = os.path.join(tmp, "callgrind.out")
        gate = procs.start(
            ["valgrind", "--tool=callgrind", "--separate-threads=yes", "--compress-strings=no",
             "--compress-pos=no", f"--callgrind-out-file={out}", bench.WHOPGATE, "--config", config],
            env=env,
        )
        bench.wait_http(f"http://{admin}/readyz", timeout=60, want=200)
        url = f"http://127.0.0.1:{port}{args.path}"
        header = [f"x-request-padding: {'p' * len(token)}" if args.padding else f"x-whop-user-token: {token}"]
        opts = argparse.Namespace(threads=1, connections=4)
        bench.wrk(url, opts, 3, headers=header)  # warm: token verified, decision cached, pool open

        subprocess.run(["callgrind_control", "-z", str(gate.pid)], check=True, capture_output=True)
        result = bench.wrk(url, opts, args.seconds, headers=header)
        subprocess.run(["callgrind_control", "-d", str(gate.pid)], check=True, capture_output=True)
        time.sleep(1)
        if result["non2xx"] or result["errors"]:
            raise RuntimeError(f"the counted load was not all 2xx: {result}")

        # One file per thread; the worker is the one that did the work.
        dumps = [p for p in glob.glob(out + ".1-*") if re.search(r"\.1-\d+$", p)]
        costs = max((self_costs(p) for p in dumps), key=lambda c: sum(c.values()))
        total = sum(costs.values())
        n = result["requests"]
        print(f"{args.path}: {total / n:,.0f} instructions per request ({n} requests, one worker, caches warm)")
        for name, cost in costs.most_common(args.top):
            print(f"  {cost / n:7,.0f}  {100 * cost / total:4.1f} %  {name[:120]}")
    finally:
        procs.stop_all()


if __name__ == "__main__":
    main()
