"""The Python half of supervisor/start.sh: render the configurations, wait for readiness.

    python supervisor/kit.py render --run-dir DIR --processes N --port P [--host H]
                                    [--first-process-port Q] [--tls-port T --cert F --key F]
    python supervisor/kit.py wait --process-ports 7001,7002 --http H:P [--https H:T]
                                  [--timeout S]

``render`` writes ``supervisord.conf`` and ``nginx.conf`` into the run
directory from the templates beside this file (``string.Template``), with
the PUSH_* variables of its environment checked by the server's own
``settings.load_settings``, so that a bad value stops here with the server's
message instead of as a process that never starts; and
``prometheus-targets.json``, every process as a Prometheus ``file_sd``
target (``monitoring/prometheus.yml`` reads it). ``wait`` polls every
process's ``/ready`` and nginx's ``/health`` until all answer 200.

Standard library only, plus the repository's ``settings.py`` (and what it
imports): the interpreter that runs this also runs the servers.

The directory is named ``supervisor`` but is no Python package (no
``__init__.py``): ``python -m supervisor.supervisord`` must find the PyPI
package, and a directory without ``__init__.py`` never shadows it.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import re
import resource
import shlex
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from string import Template

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
#: Descriptors asked for (supervisord's minfds, nginx's worker_rlimit_nofile).
WANTED_FDS = 65536
#: Processes listen on loopback: only nginx, on this machine, reaches them.
PROCESS_HOST = "127.0.0.1"
#: The server flags set these; TLS ends at nginx, so the processes speak plain HTTP.
NOT_FORWARDED = ("PUSH_HOST", "PUSH_PORT", "PUSH_TLS_CERT", "PUSH_TLS_KEY")
#: Unix socket paths are limited to 108 bytes (with the terminating NUL).
SOCKET_PATH_MAX = 100
#: Characters a path may hold here: nginx and supervisor read these files
#: unquoted, and supervisor expands '%'. Anything else is refused, clearly.
SAFE_PATH = re.compile(r"[A-Za-z0-9_./+@,=:-]+")
#: Every process's /metrics as a Prometheus file_sd target group, under this job.
TARGETS_FILE = "prometheus-targets.json"
PROMETHEUS_JOB = "tornado_push"


class KitError(Exception):
    """Refused: the message says why and what to do."""


# -- render --------------------------------------------------------------------------

def render(args: argparse.Namespace, environ: dict[str, str]) -> list[str]:
    """Write both configurations; the warnings to show the user."""
    warnings: list[str] = []
    run_dir = Path(args.run_dir).resolve()
    for name, path in (("run directory", run_dir), ("repository", REPO)):
        if not SAFE_PATH.fullmatch(str(path)):
            raise KitError(f"the {name} path {str(path)!r} has characters nginx or supervisor "
                           "would misread (spaces, quotes, %, ;, #, $): choose another "
                           "(start.sh --run-dir)")
    if len(str(run_dir / "supervisor.sock")) > SOCKET_PATH_MAX:
        raise KitError(f"the run directory {run_dir} is too long for supervisord's socket "
                       f"(a Unix socket path is at most {SOCKET_PATH_MAX} characters here): "
                       "choose a shorter --run-dir")

    ports = check_ports(args)
    in_use = [f"{host}:{port}" for host, port in
              [(PROCESS_HOST, port) for port in ports]
              + [(args.host, port) for port in (args.port, args.tls_port) if port is not None]
              if port_in_use(host, port)]
    if in_use:
        raise KitError(f"already in use: {', '.join(in_use)} (another start from a different "
                       "run directory? choose other ports)")
    tls = args.tls_port is not None
    if tls:
        for flag, path in (("--cert", args.cert), ("--key", args.key)):
            if not path:
                raise KitError(f"--tls-port needs {flag}")
            if not os.access(path, os.R_OK):
                raise KitError(f"{flag} {path}: cannot be read")
            if not SAFE_PATH.fullmatch(str(Path(path).resolve())):
                raise KitError(f"{flag} {path}: move it to a path without spaces or quotes")
    elif args.cert or args.key:
        raise KitError("--cert and --key go with --tls-port")

    forwarded = {name: value for name, value in environ.items()
                 if name.startswith("PUSH_") and name not in NOT_FORWARDED}
    for name in NOT_FORWARDED:
        if name in environ:
            warnings.append(f"{name} is not passed to the processes: "
                            + ("they listen where start.sh says (--first-process-port)"
                               if name in ("PUSH_HOST", "PUSH_PORT")
                               else "nginx terminates TLS (--tls-port, --cert, --key)"))
    if forwarded.get("PUSH_XHEADERS", "true").strip().lower() not in ("1", "true", "yes", "on"):
        warnings.append("PUSH_XHEADERS is set to true: behind nginx the client's address "
                        "comes from X-Real-IP")
    forwarded["PUSH_XHEADERS"] = "true"
    settings = check_settings(forwarded)
    if args.processes > 1 and settings.redis is None:
        raise KitError(f"{args.processes} processes need Redis to act as one server: set "
                       "PUSH_REDIS_URL (e.g. redis://127.0.0.1:6379/0), or run --processes 1")

    fds = allowed_fds()
    if fds < WANTED_FDS:
        warnings.append(f"file descriptors: this machine allows {fds}, not {WANTED_FDS}; "
                        "raise the hard limit (ulimit -Hn, LimitNOFILE) for more connections")
    stopwaitsecs = math.ceil(settings.drain_timeout) + 5
    # Longer than the longest silence of a healthy WebSocket (see nginx.conf).
    proxy_timeout = math.ceil(settings.hub.activity_timeout + settings.hub.pong_timeout) + 10

    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    (run_dir / "nginx-temp").mkdir(exist_ok=True)
    supervisord = Template((HERE / "supervisord.conf.template").read_text()).substitute(
        run_dir=run_dir, log_dir=run_dir / "logs", minfds=fds, numprocs=args.processes,
        last_process=args.processes - 1, python=supervisor_value(shlex.quote(sys.executable)),
        process_host=PROCESS_HOST, first_port=ports[0], repo=REPO,
        environment=supervisor_environment(forwarded), drain_timeout=f"{settings.drain_timeout:g}",
        stopwaitsecs=stopwaitsecs)
    servers = "\n".join(f"        server {PROCESS_HOST}:{port} max_fails=1 fail_timeout=5s;"
                        for port in ports)
    nginx_template = (HERE / "nginx.conf.template").read_text()
    if not tls:
        nginx_template = re.sub(r"(?ms)^# BEGIN TLS.*?^# END TLS\n", "", nginx_template)
    nginx = Template(nginx_template).substitute(
        run_dir=run_dir, repo=REPO, worker_rlimit_nofile=fds, worker_connections=fds // 2,
        max_body_bytes=settings.max_body_bytes, upstream_servers=servers,
        listen_address=f"[{args.host}]" if ":" in args.host else args.host, port=args.port,
        activity_timeout=f"{settings.hub.activity_timeout:g}",
        pong_timeout=f"{settings.hub.pong_timeout:g}", proxy_timeout=proxy_timeout,
        tls_port=args.tls_port, cert=Path(args.cert).resolve() if tls else "",
        key=Path(args.key).resolve() if tls else "")
    write_private(run_dir / "supervisord.conf", supervisord)  # holds secrets
    write_private(run_dir / "nginx.conf", nginx)
    write_replacing(run_dir / TARGETS_FILE, prometheus_targets(ports))
    return warnings


def prometheus_targets(ports: list[int]) -> str:
    """The processes as one Prometheus ``file_sd`` target group (JSON).

    The processes listen on loopback, so this is for a Prometheus (or agent)
    on this machine; each process is scraped on its own port, never through
    nginx, which would reach a different process each time.
    """
    group = {"targets": [f"{PROCESS_HOST}:{port}" for port in ports],
             "labels": {"job": PROMETHEUS_JOB}}
    return json.dumps([group], indent=2) + "\n"


def check_ports(args: argparse.Namespace) -> list[int]:
    """The processes' ports: --first-process-port and the next ones, clear of nginx's."""
    if args.processes < 1:
        raise KitError("--processes must be at least 1")
    ports = list(range(args.first_process_port, args.first_process_port + args.processes))
    for flag, port in (("--port", args.port), ("--tls-port", args.tls_port),
                       ("--first-process-port", ports[0]), ("the last process port", ports[-1])):
        if port is not None and not 1 <= port <= 65535:
            raise KitError(f"{flag} must be 1-65535, got {port}")
    for flag, port in (("--port", args.port), ("--tls-port", args.tls_port)):
        if port in ports:
            raise KitError(f"{flag} {port} is one of the process ports {ports[0]}-{ports[-1]}: "
                           "choose another --first-process-port")
    if args.tls_port is not None and args.tls_port == args.port:
        raise KitError("--tls-port must differ from --port")
    return ports


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens there already (binding as the servers will, with
    SO_REUSEADDR; a port this user may not bind, e.g. 80 without root, is nginx's
    business)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False  # nginx will say what is wrong with the address
    family, kind, protocol, _, address = infos[0]
    with socket.socket(family, kind, protocol) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            return error.errno == errno.EADDRINUSE
    return False


def check_settings(forwarded: dict[str, str]):
    """The processes' settings, loaded as they will load them (errors name the variable)."""
    sys.path.insert(0, str(REPO))
    try:
        import checkout

        checkout.load()
        from tornado_push.settings import SettingsError, load_settings
    except ImportError as error:
        raise KitError(f"cannot load the server's settings with {sys.executable} ({error}): "
                       "install the requirements (pip install -r requirements.txt) "
                       "or point PYTHON at the right interpreter") from None
    try:
        return load_settings(forwarded)
    except SettingsError as error:
        raise KitError(f"invalid setting for the processes: {error}") from None


def allowed_fds() -> int:
    """The most descriptors supervisord may ask for, up to WANTED_FDS.

    Being root is not enough to raise the hard limit (a container may lack
    CAP_SYS_RESOURCE), so try it here, in this short-lived process.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard >= WANTED_FDS:
        return WANTED_FDS
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (WANTED_FDS, WANTED_FDS))
    except (ValueError, OSError):
        return hard
    return WANTED_FDS


def supervisor_value(text: str) -> str:
    """Text for supervisord.conf, where '%' starts an expansion."""
    return text.replace("%", "%%")


def supervisor_environment(variables: dict[str, str]) -> str:
    """``KEY="value",...`` as supervisor parses it (a non-POSIX shlex: no escapes).

    A value is quoted with whichever quote it does not hold; values that
    cannot be written (both quotes, a newline, a quote at either end, or an
    inline comment " ;" / " #") are refused, naming the variable only: the
    value may be a secret.
    """
    pairs = []
    for name, value in sorted(variables.items()):
        quote = '"' if '"' not in value else "'"
        ends = {value[:1], value[-1:]}
        if (quote in value or "\n" in value or "\r" in value or ends & {"'", '"'}
                or re.search(r"\s[;#]", value)):
            raise KitError(f"{name}: its value cannot be written into supervisord.conf "
                           "(it holds both kinds of quote, a newline, a quote at an end, "
                           "or ' ;' / ' #'): change it")
        pairs.append(f"{name}={quote}{supervisor_value(value)}{quote}")
    return ",".join(pairs)


def write_replacing(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step: Prometheus rereads a targets file
    as soon as it changes, and must never see it half written."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by its owner only (the file may hold secrets)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    os.chmod(path, 0o600)


# -- wait ----------------------------------------------------------------------------

def wait(args: argparse.Namespace) -> None:
    """Poll until every process's /ready and nginx's /health answer 200 (bounded)."""
    urls = [f"http://{PROCESS_HOST}:{port}/ready" for port in args.process_ports]
    urls += [f"http://{address}/health" for address in args.http]
    urls += [f"https://{address}/health" for address in args.https]
    # The certificate may name the public host, not the loopback address
    # checked here: this is a liveness check, not a verification.
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + args.timeout
    last: dict[str, str] = {}
    while True:
        for url in [url for url in urls if last.get(url) != "200"]:
            last[url] = status(url, unverified)
        if all(answer == "200" for answer in last.values()):
            return
        if time.monotonic() > deadline:
            waiting = "; ".join(f"{url}: {answer}" for url, answer in last.items()
                                if answer != "200")
            raise KitError(f"not ready after {args.timeout:g} s: {waiting}")
        time.sleep(0.2)


def status(url: str, context: ssl.SSLContext) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return str(response.status)
    except urllib.error.HTTPError as error:
        return str(error.code)
    except (OSError, ValueError) as error:
        return f"no answer ({getattr(error, 'reason', error)})"


# -- command line --------------------------------------------------------------------

def address(text: str) -> str:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="supervisor/kit.py", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("render", help="write supervisord.conf and nginx.conf")
    make.add_argument("--run-dir", required=True)
    make.add_argument("--processes", type=int, required=True)
    make.add_argument("--port", type=int, required=True)
    make.add_argument("--host", default="127.0.0.1")
    make.add_argument("--first-process-port", type=int, default=7001)
    make.add_argument("--tls-port", type=int)
    make.add_argument("--cert")
    make.add_argument("--key")
    ready = commands.add_parser("wait", help="wait until every process and nginx answer")
    ready.add_argument("--process-ports", required=True,
                       type=lambda text: [int(port) for port in text.split(",")])
    ready.add_argument("--http", action="append", default=[], type=address)
    ready.add_argument("--https", action="append", default=[], type=address)
    ready.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    try:
        if args.command == "render":
            for warning in render(args, dict(os.environ)):
                print(f"warning: {warning}", file=sys.stderr)
        else:
            wait(args)
    except KitError as error:
        print(f"{parser.prog} {args.command}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
