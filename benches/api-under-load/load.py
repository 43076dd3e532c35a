#!/usr/bin/env python3
"""Times `GET /v1/version` on an oxvirtd socket, idle and while client threads keep posting
maximal XML bodies, and prints one JSON object with the figures.

Body kinds (all posted to /v1/domains, /v1/networks and /v1/pools in turn):
  wide   one element with 60,000 attributes (about 1 MiB): over the attribute limit. Before the
         limits existed, roxmltree's pairwise duplicate check made this minutes of CPU.
  legal  4 MiB of nested elements with 60 attributes each: under every limit, so the daemon parses
         all of it before it refuses the first unknown attribute: the most parsing a body can cost.
"""
import argparse
import json
import socket
import statistics
import threading
import time


def request(path, method, target, body=b"", timeout=30.0):
    """One HTTP/1.1 exchange over the Unix socket; returns (status, seconds)."""
    start = time.monotonic()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        head = (
            f"{method} {target} HTTP/1.1\r\nHost: oxvirtd\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        s.sendall(head + body)
        reply = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0
    return status, time.monotonic() - start


def xml_body(kind, root):
    if kind == "wide":
        attrs = " ".join(f"a{i}='x'" for i in range(60000))
        xml = f"<{root}><name {attrs}/></{root}>"
    else:
        attrs = " ".join(f"b{i}='y'" for i in range(60))
        element = f"<e {attrs}/>"
        parts, size = [], 0
        while size < (4 << 20) - 4096:
            parts.append(element)
            size += len(element)
        xml = f"<{root}><name>x</name><devices>{''.join(parts)}</devices></{root}>"
    return json.dumps({"xml": xml}).encode()


def percentile(values, p):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def probe(path, seconds, interval, timeout):
    latencies, failures = [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            status, took = request(path, "GET", "/v1/version", timeout=timeout)
            if status == 200:
                latencies.append(took)
            else:
                failures += 1
        except OSError:
            failures += 1
            latencies.append(timeout)
        time.sleep(interval)
    return latencies, failures


def summary(latencies, failures):
    ms = [1000 * x for x in latencies]
    return {
        "samples": len(ms),
        "failed": failures,
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else None,
        "mean_ms": statistics.mean(ms) if ms else None,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("socket")
    parser.add_argument("--kind", choices=["wide", "legal"], required=True)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=10)
    args = parser.parse_args()

    idle = summary(*probe(args.socket, 5, args.interval, args.timeout))
    bodies = {root: xml_body(args.kind, root) for root in ("domain", "network", "pool")}
    targets = [("/v1/domains", bodies["domain"]), ("/v1/networks", bodies["network"]),
               ("/v1/pools", bodies["pool"])]
    stop = threading.Event()
    answered, statuses, body_times = [0], {}, []
    lock = threading.Lock()

    def loader(index):
        n = index
        while not stop.is_set():
            target, body = targets[n % len(targets)]
            n += 1
            try:
                status, took = request(args.socket, "POST", target, body, timeout=120)
            except OSError:
                status, took = 0, None
            with lock:
                answered[0] += 1
                statuses[status] = statuses.get(status, 0) + 1
                if took is not None:
                    body_times.append(took)

    threads = [threading.Thread(target=loader, args=(i,), daemon=True) for i in range(args.clients)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    loaded = summary(*probe(args.socket, args.seconds, args.interval, args.timeout))
    stop.set()
    print(json.dumps({
        "kind": args.kind,
        "clients": args.clients,
        "body_bytes": {root: len(body) for root, body in bodies.items()},
        "idle": idle,
        "loaded": loaded,
        "bodies_answered": answered[0],
        "body_statuses": statuses,
        "body_p50_ms": percentile([1000 * x for x in body_times], 50),
    }))


if __name__ == "__main__":
    main()
