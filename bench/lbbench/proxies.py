"""The proxies under test: our balancer, HAProxy and nginx, configured for
the same job (round robin over the same replicas, upstream keep-alive, no
logging, and the forwarding fields our balancer adds: `X-Request-ID`, also
in the reply, `X-Forwarded-For`, `-Proto`, `-Host` and `Forwarded`), and the
static origin used for 1 MiB bodies. `haproxy-xff` is HAProxy adding only
`X-Forwarded-For` (`option forwardfor`), the lighter job earlier runs
compared against."""

import os
from dataclasses import dataclass, field

from . import procs

# The balancing choices compared with 100 replicas: ours by --policy name,
# HAProxy by `balance` algorithm.
HAPROXY_BALANCE = ("roundrobin", "leastconn")


# What our balancer adds to every request (proxy/headers.rs,
# proxy/request_id.rs), as HAProxy 2.6 rules: a client's X-Request-ID is
# kept, else a new random one; the reply carries it; Forwarded's host is a
# quoted-string. (`option forwarded` is 2.7's; `uuid` is 122 random bits.)
HAPROXY_FORWARDING = r"""    http-request set-header X-Request-ID %[uuid] unless { req.hdr(x-request-id) -m found }
    http-request set-var(txn.rid) req.hdr(x-request-id)
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request set-header Forwarded "for=%[src];proto=http;host=\"%[req.hdr(host)]\""
    http-response set-header X-Request-ID %[var(txn.rid)]
"""

# The same fields in nginx: $request_id is 128 random bits in hex, as ours
# (a client's own id is not kept, as ours would: the bench's clients send none).
NGINX_FORWARDING = """            proxy_set_header X-Request-ID $request_id;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header Forwarded "for=$remote_addr;proto=$scheme;host=\\"$http_host\\"";
            add_header X-Request-ID $request_id;
"""


def haproxy_config(port, backends, threads, maxconn=5000, balance="roundrobin", ulimit_n=None,
                   forwarding="contract"):
    """`backends`: replica ports on 127.0.0.1. `maxconn` caps client
    connections (global and per frontend). `ulimit_n` pins HAProxy's file
    descriptor budget (it otherwise asks for 2 x maxconn and refuses to
    start above the hard RLIMIT_NOFILE). `forwarding`: `contract` adds
    every field ours adds, `xff` only X-Forwarded-For."""
    servers = "\n".join(f"    server s{i + 1} 127.0.0.1:{p}" for i, p in enumerate(backends))
    ulimit = f"    ulimit-n {ulimit_n}\n" if ulimit_n else ""
    fields = HAPROXY_FORWARDING if forwarding == "contract" else ""
    return f"""global
    nbthread {threads}
    maxconn {maxconn}
{ulimit}
defaults
    mode http
    option forwardfor
    http-reuse always
    maxconn {maxconn}
    timeout connect 1s
    timeout client 30s
    timeout server 30s

frontend fe
    bind 127.0.0.1:{port}
{fields}    default_backend be

backend be
    balance {balance}
{servers}
"""


def haproxy_maxconn(connections, nofile=None):
    """Room for `connections` clients (at least 5000, as always), but no
    more than HAProxy can back with file descriptors: it needs two per
    connection (client and server side) and refuses to start when the hard
    RLIMIT_NOFILE is below that."""
    limit = nofile or procs.nofile_limit()
    return min(max(5000, connections + 100), (limit - 100) // 2)


def nginx_worker_connections(connections):
    """Each proxied client connection holds a second one upstream (nginx
    counts both against worker_connections)."""
    return max(10000, 2 * connections + 100)


def nginx_config(port, backends, threads, workdir, worker_connections=10000, master_process=True,
                 client_max_body_size=None, rlimit_nofile=None):
    servers = "\n".join(f"        server 127.0.0.1:{p};" for p in backends)
    user = "user root root;\n" if os.geteuid() == 0 else ""
    master = "" if master_process else "master_process off;\n"
    body = f"    client_max_body_size {client_max_body_size};\n" if client_max_body_size else ""
    return f"""{user}{master}worker_processes {threads};
worker_rlimit_nofile {rlimit_nofile or max(20000, 2 * worker_connections)};
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
daemon off;
events {{
    worker_connections {worker_connections};
}}
http {{
    access_log off;
    keepalive_requests 1000000;
{body}    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    upstream replicas {{
{servers}
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{
            proxy_pass http://replicas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
{NGINX_FORWARDING}        }}
    }}
}}
"""


def origin_config(ports, workdir, max_body="2m"):
    """The static origin for 1 MiB bodies (the backend binary has no payload
    endpoint): one nginx worker listening on every port in `ports`;
    `GET /home` answers a small JSON body, `GET /large.bin` the file
    `workdir/www/large.bin`, `POST /upload` reads the body, discards it and
    answers 200; `GET /heartbeat` answers 200 (our balancer's health check)."""
    listens = "\n".join(f"        listen 127.0.0.1:{p} reuseport;" for p in ports)
    user = "user root root;\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes 1;
worker_rlimit_nofile 40000;
pid {workdir}/origin.pid;
error_log {workdir}/origin-error.log warn;
daemon off;
events {{
    worker_connections 20000;
}}
http {{
    access_log off;
    keepalive_requests 1000000;
    sendfile on;
    client_body_temp_path {workdir}/origin-body;
    server {{
{listens}
        root {workdir}/www;
        location = /home {{
            default_type application/json;
            return 200 '{{"message":"Hello from Server: origin","status":"successful"}}';
        }}
        location = /heartbeat {{
            return 200;
        }}
        location = /large.bin {{
        }}
        location = /upload {{
            client_max_body_size {max_body};
            client_body_buffer_size {max_body};
            return 200 "ok\\n";
        }}
    }}
}}
"""


@dataclass
class Target:
    """One proxy to start: `kind` is ours, before (ours from another build),
    haproxy, nginx or relay (the byte relay, the machine's ceiling);
    `policy` is our --policy or HAProxy's balance."""

    kind: str
    policy: str = ""
    label: str = ""
    extra: list = field(default_factory=list)

    @property
    def name(self):
        return self.label or (f"{self.kind}:{self.policy}" if self.policy else self.kind)


def ours_command(bin_dir, port, backends, threads, policy="round-robin", extra=()):
    upstreams = [a for p in backends for a in ("--upstream", f"http://127.0.0.1:{p}")]
    return [
        str(bin_dir / "balancer"), "--listen", f"127.0.0.1:{port}", "--orchestrator", "static",
        *upstreams, "--policy", policy or "round-robin", "--threads", str(threads), "--log", "warn", *extra,
    ]


def start(target, threads, backends, bins, workdir, cpus, connections=500, wrapper=(), single_process=False,
          before_bins=None, wait_path="/home", wait_timeout=10.0):
    """Starts one proxy; returns (process, port). `connections` is the most
    client connections it will be given (sizes HAProxy's maxconn and nginx's
    worker_connections); `wrapper` prefixes the command (valgrind);
    `single_process` runs nginx without a master (one process to profile)."""
    if isinstance(target, str):
        target = Target(target)
    port = procs.free_port()
    nofile = procs.NOFILE
    wrapper = list(wrapper)
    tag = target.name.replace(":", "-")
    if target.kind in ("ours", "before"):
        bin_dir = before_bins if target.kind == "before" else bins
        cmd = ours_command(bin_dir, port, backends, threads, target.policy or "round-robin", target.extra)
        proc = procs.start(wrapper + cmd, cpus, nofile=nofile)
    elif target.kind in ("haproxy", "haproxy-xff"):
        cfg = workdir / f"haproxy-{tag}-{port}.cfg"
        cfg.write_text(haproxy_config(port, backends, threads, haproxy_maxconn(connections),
                                      target.policy or "roundrobin",
                                      forwarding="xff" if target.kind == "haproxy-xff" else "contract"))
        proc = procs.start(wrapper + ["haproxy", "-db", "-f", str(cfg)], cpus, nofile=nofile)
    elif target.kind == "relay":
        upstreams = [a for p in backends for a in ("--upstream", f"127.0.0.1:{p}")]
        proc = procs.start(wrapper + [str(bins / "relay"), "--listen", f"127.0.0.1:{port}", *upstreams,
                                      "--threads", str(threads)], cpus, nofile=nofile)
    elif target.kind == "nginx":
        d = workdir / f"nginx-{port}"
        d.mkdir(parents=True, exist_ok=True)
        cfg = d / "nginx.conf"
        cfg.write_text(nginx_config(port, backends, threads, d, nginx_worker_connections(connections),
                                    master_process=not single_process, client_max_body_size="2m",
                                    rlimit_nofile=min(procs.nofile_limit(), 2 * nginx_worker_connections(connections))))
        proc = procs.start(wrapper + ["nginx", "-c", str(cfg), "-p", str(d)], cpus, nofile=nofile)
    else:
        raise ValueError(target.kind)
    procs.wait_http(f"http://127.0.0.1:{port}{wait_path}", proc, timeout=wait_timeout)
    return proc, port


def start_replicas(bins, n, cpus, first_id=1):
    """`n` replicas (the `backend` binary, one runtime thread each) on free
    loopback ports, pinned to `cpus`; returns (ports, pids) once all answer."""
    ports, pids = procs.free_ports(n), []
    for i, p in enumerate(ports):
        b = procs.start([str(bins / "backend"), "--id", str(first_id + i), "--listen", f"127.0.0.1:{p}"], cpus,
                        env={"TOKIO_WORKER_THREADS": "1", "RUST_LOG": "warn"}, nofile=procs.NOFILE)
        pids.append(b.pid)
    for p, pid in zip(ports, pids):
        proc = next((c for c in procs.CHILDREN if c.pid == pid), None)
        procs.wait_http(f"http://127.0.0.1:{p}/home", proc)
    return ports, pids
