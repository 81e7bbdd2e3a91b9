"""A fork server for `spokeshave-opt`, so the lit suite pays for importing torch once.

    python tests/filecheck/opt_server.py serve SOCKET   # import spokeshave once, fork per call
    python -S tests/filecheck/opt_server.py ARGS...     # one call: what `spokeshave-opt ARGS` does

Each `spokeshave-opt` process spends about two seconds importing torch and spokeshave before
it reads its input, and the suite starts over a hundred of them. With `SPOKESHAVE_OPT_SERVER`
naming the server's socket (tests/test_filecheck.py starts one), lit's substitution runs the
client instead: it hands its argv, working directory, environment and its stdin, stdout and
stderr (the file descriptors themselves, over the Unix socket) to the server, which forks a
child that takes those descriptors as 0, 1 and 2 and runs `spokeshave.opt.main(argv)` exactly
as a fresh `python -m spokeshave.opt` would; the child's exit status comes back as the
client's. The server never runs a torch op itself, so forking it is safe (no thread pool
exists yet). Without the variable, or when the server cannot be reached, the client execs
`python -m spokeshave.opt` itself: the suite never depends on the server.
"""
from __future__ import annotations

import array
import json
import os
import socket
import sys

ENV = "SPOKESHAVE_OPT_SERVER"


def _send(sock: socket.socket, payload: bytes, fds: list[int]) -> None:
    head = len(payload).to_bytes(8, "little")
    sock.sendmsg([head + payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])


def _receive(sock: socket.socket) -> tuple[bytes, list[int]]:
    fds = array.array("i")
    data, anc, _, _ = sock.recvmsg(1 << 16, socket.CMSG_LEN(3 * fds.itemsize))
    for level, kind, raw in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(raw[:len(raw) - len(raw) % fds.itemsize])
    size = int.from_bytes(data[:8], "little")
    body = data[8:]
    while len(body) < size:
        more = sock.recv(size - len(body))
        if not more:
            break
        body += more
    return body, list(fds)


def serve(path: str) -> None:
    import signal

    import spokeshave  # noqa: F401  everything a call would import, once
    import spokeshave.opt as opt
    from spokeshave import load_builtin

    load_builtin()
    if os.path.exists(path):
        os.remove(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(64)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    sys.stdout.flush()
    sys.stderr.flush()
    while True:
        conn, _ = server.accept()
        if os.fork() == 0:
            server.close()
            _child(conn, opt)
        conn.close()


def _child(conn: socket.socket, opt) -> None:
    import signal
    import traceback

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the child waits for its own (g++...)
    body, fds = _receive(conn)
    request = json.loads(body)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [opt.__file__, *request["argv"]]
    try:
        rc = opt.main(request["argv"])
    except SystemExit as e:  # what the interpreter does with it at exit
        if e.code is None or isinstance(e.code, int):
            rc = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            rc = 1
    except BaseException:  # noqa: BLE001 - printed as an uncaught exception would be
        traceback.print_exc()
        rc = 1
    rc = rc or 0
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        conn.sendall(str(rc).encode())
        conn.close()
        os._exit(rc)


def call(argv: list[str]) -> int:
    path = os.environ.get(ENV)
    try:
        if not path:
            raise OSError("no server")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
    except OSError:
        os.execv(sys.executable, [sys.executable, "-m", "spokeshave.opt", *argv])
    payload = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    _send(sock, payload, [0, 1, 2])
    reply = b""
    while chunk := sock.recv(64):
        reply += chunk
    return int(reply) if reply.strip() else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2])
    else:
        sys.exit(call(sys.argv[1:]))
