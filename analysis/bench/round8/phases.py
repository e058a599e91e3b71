"""Round 8 (perf notes): where a request's time goes at CONNS (50)
connections and THREADS (2) threads, from a loopback capture of 0.5 s in
the middle of a 3 s wrk run. Each request is followed by its
`x-request-id` (every proxy here adds it upstream and returns it): client
request seen -> upstream request sent ("in"), -> replica's response seen
("replica"), -> response to the client sent ("out"). tcpdump takes CPU
time of its own: the run is perturbed (wrk's own percentiles show it), and
the phases are for comparing the proxies, not for absolute figures.

Usage: python3 phases.py BIN_DIR "ours;haproxy" [ROUNDS]
"""
import collections
import re
import struct
import subprocess
import time

import common

RID = re.compile(rb"x-request-id: *([^\r\n]+)", re.I)
PCAP = "/tmp/phases.pcap"


def packets(path):
    """(time, source port, destination port, payload) of each TCP segment
    with a payload (Ethernet framing, as tcpdump gives on lo)."""
    d = open(path, "rb").read()
    off = 24
    while off + 16 <= len(d):
        sec, usec, incl, _ = struct.unpack("<IIII", d[off:off + 16])
        pkt = d[off + 16:off + 16 + incl]
        off += 16 + incl
        ip = pkt[14:]
        if len(ip) < 20 or ip[9] != 6:
            continue
        ihl = (ip[0] & 15) * 4
        total = struct.unpack(">H", ip[2:4])[0]
        tcp = ip[ihl:]
        sport, dport = struct.unpack(">HH", tcp[:4])
        doff = (tcp[12] >> 4) * 4
        if total - ihl - doff > 0:
            yield sec + usec / 1e6, sport, dport, tcp[doff:]


def phases(path, proxy_port, replica_ports):
    requests = collections.defaultdict(list)   # client port -> request times
    responses = collections.defaultdict(list)  # client port -> (time, id)
    upstream = collections.defaultdict(list)   # proxy's upstream port -> (time, id)
    answers = collections.defaultdict(list)    # proxy's upstream port -> times
    for t, sport, dport, pay in packets(path):
        if dport == proxy_port:
            requests[sport].append(t)
        elif sport == proxy_port and pay.startswith(b"HTTP/"):
            m = RID.search(pay)
            responses[dport].append((t, m.group(1) if m else None))
        elif dport in replica_ports:
            m = RID.search(pay)
            if m:
                upstream[sport].append((t, m.group(1)))
        elif sport in replica_ports and pay.startswith(b"HTTP/"):
            answers[dport].append(t)
    sent, answered = {}, {}
    for port, reqs in upstream.items():
        ans, j = sorted(answers[port]), 0
        for t, rid in sorted(reqs):
            while j < len(ans) and ans[j] < t:
                j += 1
            if j < len(ans):
                sent[rid], answered[rid] = t, ans[j]
                j += 1
    rows = []
    for port, reqs in requests.items():
        resp, j = sorted(responses[port]), 0
        for t0 in sorted(reqs):
            while j < len(resp) and resp[j][0] < t0:
                j += 1
            if j < len(resp):
                t3, rid = resp[j]
                j += 1
                if rid in sent:
                    rows.append((t3 - t0, sent[rid] - t0, answered[rid] - sent[rid], t3 - answered[rid]))
    return rows


def main():
    bins, variants, rounds = common.args(1)
    for v, _kind, _proc, url, backends in common.each_proxy(bins, variants, rounds, "phases"):
        p = common.wrk_percentiles(url)
        time.sleep(1.2)
        subprocess.run(["timeout", "0.5", "tcpdump", "-i", "lo", "-s", "600", "-B", "65536", "-Z", "root",
                        "-w", PCAP, "tcp"], capture_output=True)
        out = p.communicate()[0]
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        rows = phases(PCAP, port, set(backends))
        print(v, "wrk:", next(x for x in out.splitlines() if x.startswith("PCT"))[4:])
        for q in (0.5, 0.9, 0.99, 0.999):
            cut = [sorted(r[i] for r in rows)[min(len(rows) - 1, int(len(rows) * q))] * 1000 for i in range(4)]
            print(f"  q{q}: total {cut[0]:.2f}, in {cut[1]:.2f}, replica {cut[2]:.2f}, out {cut[3]:.2f} ms"
                  f" ({len(rows)} requests)")


if __name__ == "__main__":
    main()
