"""Putting the app together from a resolved config, and serving it with uvicorn."""

from __future__ import annotations

import ipaddress
import secrets
import socket

from patchcfg.errors import UserError

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str, port: int) -> set[str] | None:
    """The Host headers a browser sends for this bind; None (any) for a wildcard bind."""
    if host in ("0.0.0.0", "::", ""):
        return None
    names = {host, f"[{host}]" if ":" in host else host}
    if is_loopback(host):
        names |= {"127.0.0.1", "localhost", "[::1]"}
    return {f"{name}:{port}" for name in names} | ({*names} if port == 80 else set())


def check_output_groups(config: dict, classes: list[str]) -> None:
    """Refuse a class change the config's output groups would not hold: the table would be written
    with it, and every later command on this config (``patchcfg label`` too) would refuse to start."""
    from patchcfg.label.errors import RequestError
    from patchcfg.models.outputs import resolve_groups

    if not config.get("finetune"):
        return
    try:
        resolve_groups(config["finetune"], classes)
    except UserError as error:
        raise RequestError(f"the config's output groups would not hold the classes {classes} ({error}). Give "
                           "finetune.outputs a group with `classes: rest` (new classes join it), restart "
                           "`patchcfg label`, and try again", 409) from None


def build(config: dict, experiments_root=None, *, embed: bool = True, log=print, idle_seconds: float = 2.0):
    """The :class:`~patchcfg.label.service.LabelApp` of a resolved config (table read, journal replayed)."""
    from patchcfg.experiment import experiments_root as root_of
    from patchcfg.label.jobs import Jobs
    from patchcfg.label.learner import Learner
    from patchcfg.label.metrics import check_stop_when
    from patchcfg.label.queue import Queue
    from patchcfg.label.render import Renderer
    from patchcfg.label.service import LabelApp
    from patchcfg.label.store import LabelStore

    settings = config["label"]
    if not config["data"].get("labels"):
        raise UserError("label needs the label table: set data.labels in the config, or pass --labels FILE "
                        "(make one with `patchcfg init IMAGES --out labels.csv`)")
    check_stop_when(settings["stop_when"])
    store = LabelStore(config["data"]["labels"], settings["validation_fraction"], log=log,
                       check_classes=lambda classes: check_output_groups(config, classes))
    experiment_dir = root_of(experiments_root) / config["name"]
    learner = Learner(store, config, experiment_dir, embed=embed, log=log)
    queue = Queue(store, learner, config)
    if settings["finetune_every"] is not None and not config.get("finetune"):
        raise UserError("label.finetune_every is set, but the config has no finetune section to run")
    jobs = Jobs(store, learner, config, log=log)
    return LabelApp(store, queue, learner, Renderer(settings["display"]), config, idle_seconds=idle_seconds,
                    jobs=jobs)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP (not 0) lets asyncio set TCP_NODELAY on each connection; without it a reply
    # written in two parts waits for the browser's delayed ACK, about 40 ms per request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        hint = "pick another with --port (0 = any free port)" if error.errno in (98, 48) else "check --host"
        raise UserError(f"cannot listen on {host}:{port} ({error.strerror}); {hint}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(label_app, host: str, port: int, *, open_browser: bool, echo=print) -> None:
    """Serve until Ctrl-C (or SIGTERM); every label is in the CSV when this returns."""
    import uvicorn

    from patchcfg.label.app import create_app

    sock = bind(host, port)
    port = sock.getsockname()[1]
    token = secrets.token_urlsafe(24)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/?token={token}"
    store = label_app.store

    def ready():
        """The address is shown only once the server answers and handles Ctrl-C itself: a Ctrl-C
        from then on always stops it cleanly."""
        if not is_loopback(host):
            echo(f"warning: --host {host} is not loopback: anyone who can reach this machine and learns the "
                 "token can read the images and change the labels; the token travels unencrypted (plain HTTP)")
        echo(f"labelling {store.path} ({len(store)} rows, {len(store.classes)} classes); "
             f"journal {store.journal_path}")
        echo(url, flush=True)
        echo("Ctrl-C stops the app (every label is written first)", flush=True)
        if open_browser:
            import webbrowser

            webbrowser.open(url)

    try:
        app = create_app(label_app, token, allowed_hosts(host, port), port=port, on_ready=ready)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                timeout_graceful_shutdown=3)
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled: stopping is what was asked
        pass
    finally:
        sock.close()
        label_app.stop()  # idempotent: the lifespan has flushed already unless start-up failed
    if store.error:
        raise UserError(f"stopped, but {store.error}")
    echo(f"stopped; {store.path} holds every label ({len(store.session_rows)} rows labelled this session)")
